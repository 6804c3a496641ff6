//! SASL PLAIN (RFC 4616): one message, `authzid NUL authcid NUL password`, with an empty authzid.

/// The single PLAIN client message.
pub(crate) fn initial_response(username: &str, password: &str) -> Vec<u8> {
    let mut msg = Vec::with_capacity(2 + username.len() + password.len());
    msg.push(0);
    msg.extend_from_slice(username.as_bytes());
    msg.push(0);
    msg.extend_from_slice(password.as_bytes());
    msg
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_message_has_empty_authzid() {
        assert_eq!(
            super::initial_response("alice", "s3cret"),
            b"\0alice\0s3cret"
        );
    }
}
