//! When bytes arrived at a socket, by the kernel's clock (`SO_TIMESTAMPNS`): the time a message
//! reached this machine's socket, whatever the load generator's own threads were doing then. On
//! a machine whose cores the server and the load generator share, a reader that is scheduled late
//! reads a message late; the arrival stamp separates the server's delay from the reader's.

use std::cell::Cell;
use std::io::{self, IoSliceMut, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;

thread_local! {
    /// The arrival of the bytes this thread read last through [`read_stamped`].
    static LAST: Cell<Option<SystemTime>> = const { Cell::new(None) };
}

/// Asks the kernel to stamp what arrives at `s`.
pub(crate) fn stamp(s: &TcpStream) {
    setsockopt(s, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
}

/// Reads from `s` as `read` does, noting when the bytes read arrived (on a socket [`stamp`]ed).
pub(crate) fn read_stamped(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut space = nix::cmsg_space!(TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    // Set on every read, so that bytes without a stamp never carry another read's.
    let at = msg.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(ts) => {
                Some(UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
            }
            _ => None,
        })
    });
    LAST.with(|l| l.set(at));
    Ok(msg.bytes)
}

/// When the bytes this thread read last arrived.
pub(crate) fn last() -> Option<SystemTime> {
    LAST.with(Cell::get)
}

/// A stamped socket as a stream, for `tungstenite`, with the arrival of what it read last.
pub(crate) struct Stamped(pub(crate) TcpStream, pub(crate) Option<SystemTime>);

impl Read for Stamped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = read_stamped(&self.0, buf)?;
        self.1 = last();
        Ok(n)
    }
}

impl Write for Stamped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
