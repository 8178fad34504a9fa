//! Scheduling for threads whose work may wait: the snapshot worker replays the journal into its
//! shadow matcher, and nothing is acknowledged later for it. On a machine with no core to spare
//! it should take only time that no other thread of the process, nor anything else, wants.
//!
//! [`Background`] runs its thread under Linux's `SCHED_IDLE` policy while the thread keeps up,
//! and at normal priority (`SCHED_OTHER`, nice 0) while it catches up. Leaving `SCHED_IDLE`
//! needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows nice 0; without either, a thread that
//! entered it could never leave it, so the thread then stays at normal priority (logged).

use std::sync::OnceLock;

use thread_priority::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue,
    ThreadSchedulePolicy,
};

/// The crate maps its portable priorities 0 – 99 onto nice 19 – -20 for the normal policies:
/// 47 is nice 0, the default (a test reads it back from the kernel).
const NICE_ZERO: u8 = 47;

/// Sets the calling thread's policy: `SCHED_IDLE`, or `SCHED_OTHER` at nice 0.
fn set_idle(idle: bool) -> Result<(), String> {
    let (policy, priority) = if idle {
        (NormalThreadSchedulePolicy::Idle, ThreadPriority::Min)
    } else {
        let nice_zero = ThreadPriorityValue::try_from(NICE_ZERO)?;
        (NormalThreadSchedulePolicy::Other, ThreadPriority::Crossplatform(nice_zero))
    };
    set_thread_priority_and_policy(thread_native_id(), priority, ThreadSchedulePolicy::Normal(policy))
        .map_err(|e| format!("{e:?}"))
}

/// Whether a thread of this process may enter `SCHED_IDLE` and leave it again: tried once, on a
/// thread of its own that is dropped after.
fn may_leave_idle() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("viaduct-probe".into())
                .spawn(|| set_idle(true).and_then(|()| set_idle(false)))
                .map_err(|e| e.to_string())?
                .join()
                .unwrap_or_else(|_| Err("the probe thread panicked".into()))
        })
        .clone()
}

/// The scheduling of the calling thread, as its work keeps up or falls behind.
pub struct Background {
    stage: &'static str,
    /// `SCHED_IDLE` is used at all.
    switchable: bool,
    idle: bool,
}

impl Background {
    /// Puts the calling thread, which runs `stage`, at idle priority if `wanted` and the process
    /// may later return it to normal priority; otherwise it stays as it is (logged either way).
    pub fn enter(stage: &'static str, wanted: bool) -> Background {
        let mut b = Background { stage, switchable: false, idle: false };
        if !wanted {
            tracing::info!("{stage}: at normal priority (the profile asks so)");
            return b;
        }
        match may_leave_idle().and_then(|()| set_idle(true)) {
            Ok(()) => {
                tracing::info!("{stage}: at idle priority while it keeps up, at normal priority while it catches up");
                (b.switchable, b.idle) = (true, true);
            }
            Err(e) => tracing::warn!(
                "{stage}: stays at normal priority: this process may not return a thread from idle priority ({e}); give it CAP_SYS_NICE or an RLIMIT_NICE of 20 (systemd: LimitNICE=0)"
            ),
        }
        b
    }

    /// Whether the thread is at idle priority now.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// Normal priority while `behind`, idle priority once it is not (if the thread uses idle
    /// priority at all). A thread that fails to go idle stays at normal priority for good; one
    /// that fails to return to normal (allowed when probed, so not expected) tries again at the
    /// next call. Returns what to alert on: a failed return to normal priority.
    pub fn set_behind(&mut self, behind: bool) -> Option<String> {
        if !self.switchable || self.idle != behind {
            return None;
        }
        match set_idle(!behind) {
            Ok(()) => {
                self.idle = !behind;
                tracing::info!("{}: at {} priority", self.stage, if behind { "normal" } else { "idle" });
                None
            }
            Err(e) if self.idle => {
                Some(format!("returning to normal priority failed ({e}); the thread may fall behind"))
            }
            Err(e) => {
                tracing::warn!("{}: going to idle priority failed ({e}); it stays at normal priority", self.stage);
                self.switchable = false;
                None
            }
        }
    }
}

impl Drop for Background {
    /// A thread that outlives its `Background` (a pooled thread, a test's) is given back at
    /// normal priority.
    fn drop(&mut self) {
        if let Some(why) = self.set_behind(true) {
            tracing::warn!("{}: {why}", self.stage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's policy and nice value, as the kernel reports them.
    fn policy_and_nice() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces: nice is
        // field 19 and policy field 41 of the whole line.
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        (rest[41 - 3].parse().unwrap(), rest[19 - 3].parse().unwrap())
    }

    const SCHED_OTHER: u32 = 0;
    const SCHED_IDLE: u32 = 5;

    #[test]
    fn a_background_thread_is_idle_while_it_keeps_up_and_normal_while_it_catches_up() {
        std::thread::spawn(|| {
            assert_eq!(policy_and_nice(), (SCHED_OTHER, 0));
            let mut b = Background::enter("test", true);
            if may_leave_idle().is_err() {
                // An unprivileged process with RLIMIT_NICE 0: it must not have gone idle.
                assert!(!b.is_idle());
                assert_eq!(policy_and_nice(), (SCHED_OTHER, 0));
                return;
            }
            assert!(b.is_idle());
            assert_eq!(policy_and_nice().0, SCHED_IDLE);
            b.set_behind(true);
            assert!(!b.is_idle());
            assert_eq!(policy_and_nice(), (SCHED_OTHER, 0), "back at normal priority, nice 0");
            b.set_behind(false);
            assert_eq!(policy_and_nice().0, SCHED_IDLE);
            drop(b);
            assert_eq!(policy_and_nice(), (SCHED_OTHER, 0), "dropping it restores normal priority");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_the_profile_keeps_at_normal_priority_never_changes() {
        std::thread::spawn(|| {
            let mut b = Background::enter("test", false);
            assert!(!b.is_idle());
            b.set_behind(false);
            assert_eq!(policy_and_nice(), (SCHED_OTHER, 0));
        })
        .join()
        .unwrap();
    }
}
