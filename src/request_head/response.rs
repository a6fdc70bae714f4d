//! What the first bytes linkgate writes on a connection say about the response: interim,
//! final, a protocol switch (and whether to WebSocket), or not HTTP/1 at all. Pingora
//! writes a status line, and a `101` head, in one piece, so one write is enough to tell.

pub(super) enum Response {
    /// `1xx` other than `101`: the final response follows.
    Interim,
    /// The final response.
    Final,
    /// `101 Switching Protocols`.
    Upgrade,
    /// Not an HTTP/1 status line.
    NotHttp1,
}

/// The length of a `101` response head (Pingora writes it in one piece) that switches to
/// WebSocket, or `None` for any other protocol.
pub(super) fn websocket_head_len(data: &[u8]) -> Option<usize> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &data[..end];
    head.windows(b"websocket".len())
        .any(|w| w.eq_ignore_ascii_case(b"websocket"))
        .then_some(end)
}

/// What the first bytes of a response say (Pingora writes a status line in one piece).
pub(super) fn response_kind(data: &[u8]) -> Response {
    let Some(status) = data
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| data.strip_prefix(b"HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
    else {
        return Response::NotHttp1;
    };
    match status {
        b"101" => Response::Upgrade,
        [b'1', _, _] => Response::Interim,
        _ => Response::Final,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_told_apart() {
        assert!(matches!(
            response_kind(b"HTTP/1.1 200 OK\r\n"),
            Response::Final
        ));
        assert!(matches!(
            response_kind(b"HTTP/1.1 100 Continue\r\n"),
            Response::Interim
        ));
        assert!(matches!(
            response_kind(b"HTTP/1.1 101 Switching Protocols\r\n"),
            Response::Upgrade
        ));
        assert!(matches!(response_kind(b"\0\0\x12\x04"), Response::NotHttp1));
    }

    #[test]
    fn websocket_upgrades_are_told_from_others() {
        let ws = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(websocket_head_len(ws), Some(ws.len()));
        assert_eq!(
            websocket_head_len(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n"),
            None
        );
    }
}
