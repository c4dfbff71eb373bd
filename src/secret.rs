//! `Secret<T>`: how a token or a password travels — on the wire to and from the daemon, in git's
//! attributes, through the keychain and every password source, in the daemon's memory. Zeroed on drop; `Debug` shows a placeholder; serde sees the
//! value itself (`#[serde(transparent)]`), so the wire format is the plain string. The one place
//! that reads it out is `expose`, which a reviewer can grep for.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value itself: for the one place that must send, print or compare it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

/// A password (or a token) held as a string.
pub type SecretString = Secret<String>;

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Secret<String> {
        Secret(value.to_owned())
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Secret<T> {
        Secret(value)
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_it_and_serde_sees_it() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?} {:?}", Some(&secret)), "<redacted> Some(<redacted>)");
        let json = serde_json::to_string(&secret).expect("serialize");
        assert_eq!(json, "\"hunter2\"");
        let back: Secret<String> = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.expose(), "hunter2");
    }
}
