//! The JSON-RPC errors of SPEC B1.2 and B5.8, with ViaBTC's codes and messages.

/// An error reply. Each variant's code and message are exactly ViaBTC's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("invalid argument")]
    InvalidArgument,
    #[error("internal error")]
    Internal,
    #[error("service unavailable")]
    ServiceUnavailable,
    #[error("method not found")]
    MethodNotFound,
    #[error("service timeout")]
    ServiceTimeout,
    #[error("require authentication")]
    RequireAuthentication,
    /// `balance.update` (10).
    #[error("repeat update")]
    RepeatUpdate,
    /// `balance.update` (11).
    #[error("balance not enough")]
    UpdateBalanceNotEnough,
    /// `order.put_limit`, `order.put_market` (10).
    #[error("balance not enough")]
    BalanceNotEnough,
    /// `order.put_limit`, `order.put_market` (11).
    #[error("amount too small")]
    AmountTooSmall,
    /// `order.put_market` (12).
    #[error("no enough trader")]
    NoEnoughTrader,
    /// `order.cancel` (10).
    #[error("order not found")]
    OrderNotFound,
    /// `order.cancel` (11).
    #[error("user not match")]
    UserNotMatch,
    /// A new order whose client order id is still live (13; binary order entry only, as no
    /// JSON-RPC method carries a client order id): `order_id` is the order that has it.
    #[error("duplicate client order id")]
    DuplicateClientId { order_id: u64 },
    /// A post-only `order.put_limit`, or an `order.amend` to a new price, that would trade on
    /// arrival (14).
    #[error("order would take liquidity")]
    WouldTake,
    /// A fill-or-kill `order.put_limit` that cannot trade its whole amount at once (15).
    #[error("order cannot be filled completely")]
    CannotFill,
}

impl RpcError {
    pub fn code(self) -> i32 {
        match self {
            RpcError::InvalidArgument => 1,
            RpcError::Internal => 2,
            RpcError::ServiceUnavailable => 3,
            RpcError::MethodNotFound => 4,
            RpcError::ServiceTimeout => 5,
            RpcError::RequireAuthentication => 6,
            RpcError::RepeatUpdate | RpcError::BalanceNotEnough | RpcError::OrderNotFound => 10,
            RpcError::UpdateBalanceNotEnough | RpcError::AmountTooSmall | RpcError::UserNotMatch => 11,
            RpcError::NoEnoughTrader => 12,
            RpcError::DuplicateClientId { .. } => 13,
            RpcError::WouldTake => 14,
            RpcError::CannotFill => 15,
        }
    }
}
