//! Reading a small request body (a form, a token request) whole, with a bound. For
//! linkgate's own endpoints and the demo's providers; proxied bodies are streamed, never
//! read here.

use pingora::protocols::http::ServerSession;

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the bound.
    TooLarge,
    /// The client broke off or sent garbage.
    Unreadable,
}

/// Reads the whole body, refusing it once it exceeds `max` bytes, and before reading
/// anything when its `Content-Length` says it will (the client then gets its `413` at once
/// instead of after uploading the bound).
pub async fn read_bounded(session: &mut ServerSession, max: usize) -> Result<Vec<u8>, BodyError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > max {
                    return Err(BodyError::TooLarge);
                }
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(BodyError::Unreadable),
        }
    }
}
