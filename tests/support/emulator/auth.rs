//! The emulator's Authorize: HS512 tokens on the server's clock, lockout, progressive delay, 403.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha512;

use super::http::{Answer, error, json};
use super::{Received, State};

pub(super) fn server_now_ms(offset_s: i64) -> i64 {
    let real = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i64;
    real + offset_s * 1000
}

fn sign(secret: &[u8], data: &str) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(secret).expect("any key length");
    mac.update(data.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn mint(secret: &[u8], user: &str, now_ms: i64, lifetime: Duration, serial: u64) -> (String, i64) {
    let iat = now_ms / 1000;
    let exp = iat + lifetime.as_secs() as i64;
    let expires = now_ms + lifetime.as_millis() as i64;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512"}"#);
    let claims = serde_json::json!({
        "jti": format!("{serial:08x}-{:x}", now_ms), "iat": iat, "sub": user, "iss": "Densify.com", "exp": exp,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing = format!("{header}.{payload}");
    let sig = sign(secret, &signing);
    (format!("{signing}.{sig}"), expires)
}

/// The serial a token was minted with (from its `jti`), 0 when it has none.
pub(super) fn serial(token: &str) -> u64 {
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    claims
        .as_ref()
        .and_then(|c| c.get("jti"))
        .and_then(serde_json::Value::as_str)
        .and_then(|jti| jti.split('-').next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

pub(super) fn verify(token: &str, secret: &[u8], now_s: i64) -> bool {
    let Some((signing, sig)) = token.rsplit_once('.') else {
        return false;
    };
    if sign(secret, signing) != sig {
        return false;
    }
    let Some(payload) = signing.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    claims.get("exp").and_then(serde_json::Value::as_i64).is_some_and(|exp| now_s < exp)
}

pub(super) fn authorize(req: &Received, s: &mut State, secret: &[u8]) -> Answer {
    if req.method != "POST" {
        return error(405, "Method Not Allowed");
    }
    if req.header("accept").is_none_or(|a| !a.contains("application/json")) {
        return error(400, "invalid accept header");
    }
    if req.header("content-type").is_none_or(|c| !c.starts_with("application/json")) {
        return error(400, "invalid content type");
    }
    let body: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return error(400, "invalid payload"),
    };
    let (Some(name), Some(pwd)) =
        (body.get("userName").and_then(|v| v.as_str()), body.get("pwd").and_then(|v| v.as_str()))
    else {
        return error(400, "invalid payload");
    };
    if name.is_empty() || pwd.is_empty() {
        return error(400, "empty userName or pwd");
    }
    if let Some(until) = s.blocked_until {
        let now = Instant::now();
        if now < until {
            let secs = (until - now).as_secs_f64().ceil() as u64;
            return error(429, &format!("Retry After: {secs} seconds"));
        }
    }
    let (lockout_after, delay) = (s.options.lockout_after, s.options.progressive_delay);
    let Some(user) = s.users.get_mut(name) else {
        return error(401, "Unauthorized");
    };
    if user.locked {
        return error(401, "Unauthorized");
    }
    if user.password != pwd {
        user.failures += 1;
        if user.failures > lockout_after {
            user.locked = true;
        }
        if let Some(step) = delay.filter(|_| user.failures >= 2) {
            s.blocked_until = Some(Instant::now() + step * (user.failures - 1));
        }
        return error(401, "Unauthorized");
    }
    user.failures = 0;
    if user.subscription_expired {
        return error(403, "Forbidden");
    }
    s.minted += 1;
    let now_ms = server_now_ms(s.options.clock_offset);
    let (token, expires) = mint(secret, name, now_ms, s.options.lifetime, s.minted);
    s.tokens.push((token.clone(), Instant::now()));
    json(200, serde_json::json!({ "apiToken": token, "expires": expires, "status": 200 }))
}
