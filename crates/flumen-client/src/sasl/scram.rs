//! SASL SCRAM-SHA-256 / SCRAM-SHA-512 client (RFC 5802, RFC 7677), without channel binding.
//!
//! Three messages: client-first (`n,,n=user,r=nonce`), client-final (with the proof derived
//! from the salted password), then the server's signature is checked so a fake broker that
//! does not know the password is caught.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};

/// Refuse iteration counts that would stall us (Kafka allows 4096..=16384).
const MAX_ITERATIONS: u32 = 1_000_000;
const MIN_ITERATIONS: u32 = 4096;

/// The hash function of the mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        match self {
            ScramHash::Sha256 => {
                let mut mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut mac =
                    <Hmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramHash::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// A SCRAM exchange in progress.
pub(crate) struct ScramClient {
    hash: ScramHash,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// Starts an exchange with a fresh random nonce.
    pub(crate) fn new(hash: ScramHash, username: &str, password: &str) -> Self {
        let mut raw = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut raw);
        Self::with_nonce(hash, username, password, &B64.encode(raw))
    }

    fn with_nonce(hash: ScramHash, username: &str, password: &str, nonce: &str) -> Self {
        let user = username.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            hash,
            password: password.to_owned(),
            client_nonce: nonce.to_owned(),
            client_first_bare: format!("n={user},r={nonce}"),
            server_signature: None,
        }
    }

    /// The client-first message.
    pub(crate) fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Answers the server-first message with the client-final message.
    pub(crate) fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "server-first message is not UTF-8".to_owned())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("e", v)) => return Err(format!("server error: {v}")),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!("malformed server-first message `{server_first}`"));
        };
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err("server nonce does not extend ours".to_owned());
        }
        let salt = B64
            .decode(salt)
            .map_err(|e| format!("bad salt in server-first message: {e}"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| format!("bad iteration count `{iterations}`"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "iteration count {iterations} outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
            ));
        }

        let h = self.hash;
        let salted = h.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        // "biws" is base64("n,,"): no channel binding, no authzid.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message (the server's proof that it knows the password).
    pub(crate) fn verify_server_final(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| "server-final message is not UTF-8".to_owned())?;
        if let Some(err) = text.strip_prefix("e=") {
            return Err(format!("server error: {err}"));
        }
        let Some(sig) = text.split(',').find_map(|a| a.strip_prefix("v=")) else {
            return Err(format!("malformed server-final message `{text}`"));
        };
        let sig = B64
            .decode(sig)
            .map_err(|e| format!("bad server signature encoding: {e}"))?;
        match &self.server_signature {
            Some(expected) if *expected == sig => Ok(()),
            Some(_) => Err(
                "server signature does not match: the server does not know the password".to_owned(),
            ),
            None => Err("server-final message before server-first".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The SCRAM-SHA-256 example exchange of RFC 7677 section 3.
    #[test]
    fn rfc7677_example_exchange() {
        let mut c =
            ScramClient::with_nonce(ScramHash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = c.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(c.verify_server_final(b"v=AAAA").is_err());
    }

    #[test]
    fn foreign_nonce_is_refused() {
        let mut c = ScramClient::with_nonce(ScramHash::Sha512, "u", "p", "abc");
        assert!(c.client_final(b"r=xyz123,s=AAAA,i=4096").is_err());
        assert!(c.client_final(b"r=abc123,s=AAAA,i=99999999").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        // The server's messages are bytes from the network: anything gets an answer or an
        // error, and no server-final the client did not compute itself is accepted.
        #[test]
        fn any_server_message_is_answered_or_refused(
            first in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
            attrs in proptest::collection::vec(("[a-z]", "[ -~]{0,12}"), 0..6),
            last in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut c = ScramClient::with_nonce(ScramHash::Sha256, "u", "p", "abc");
            let _ = c.client_final(&first);
            let text: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = c.client_final(text.join(",").as_bytes());
            proptest::prop_assert!(c.verify_server_final(&last).is_err());
        }

        #[test]
        fn a_well_formed_server_first_is_answered_and_only_its_signature_verifies(
            suffix in "[!-+--~]{1,16}",
            salt in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..24),
            signature in proptest::collection::vec(proptest::prelude::any::<u8>(), 32),
        ) {
            let mut c = ScramClient::with_nonce(ScramHash::Sha256, "u", "p", "abc");
            let first = format!("r=abc{suffix},s={},i=4096", B64.encode(&salt));
            let answer = String::from_utf8(c.client_final(first.as_bytes()).unwrap()).unwrap();
            let expected_prefix = format!("c=biws,r=abc{suffix},p=");
            proptest::prop_assert!(answer.starts_with(&expected_prefix));
            let forged = format!("v={}", B64.encode(&signature));
            proptest::prop_assert!(c.verify_server_final(forged.as_bytes()).is_err());
            let genuine = format!("v={}", B64.encode(c.server_signature.as_ref().unwrap()));
            proptest::prop_assert!(c.verify_server_final(genuine.as_bytes()).is_ok());
        }
    }

    #[test]
    fn user_names_are_escaped() {
        let c = ScramClient::with_nonce(ScramHash::Sha256, "a=b,c", "p", "n");
        assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc,r=n");
    }
}
