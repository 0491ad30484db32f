//! Helpers for transports' connection URLs: decoding and redacting secrets.

/// Decodes `%XX` escapes, as in the user info and options of a URL.
pub fn percent_decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("a % escape is cut short")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a % escape is not hexadecimal")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a % escape is not UTF-8")
}

/// Whether an option or property of this name holds a secret (passwords,
/// tokens, private keys), so that it is never printed.
pub fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "private",
        "key.pem",
        "oauthbearer.config",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// The URL as it may be printed: the password (or a bare token) in the
/// user info becomes `***`, and so do the values of secret options.
///
/// ```
/// use msg_core::raw::url::redact;
/// assert_eq!(redact("redis://app:s3cret@host:6379/0"), "redis://app:***@host:6379/0");
/// assert_eq!(redact("nats://t0ken@host"), "nats://***@host");
/// assert_eq!(
///     redact("kafka://h:9092?sasl.password=s3cret&client_id=a"),
///     "kafka://h:9092?sasl.password=***&client_id=a"
/// );
/// ```
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("***@{hosts}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let options: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", options.join("&"))
        }
        None => tail.to_owned(),
    };
    // A URL nested in the path or query of a malformed one keeps no
    // password either.
    format!("{scheme}://{authority}{}", redact_secrets_of(url, &tail))
}

/// `text` (a parser's error message, say) with every secret of `url` in
/// it masked: the parts [`redact`] masks, as written and percent-decoded.
/// A parser quotes what it refused, which may be a piece of a malformed
/// URL that holds the password.
///
/// ```
/// use msg_core::raw::url::redact_secrets_of;
/// let url = "redis://h?amqp://app:s3cret@h";
/// assert_eq!(
///     redact_secrets_of(url, "unknown field `amqp://app:s3cret@h`"),
///     "unknown field `amqp://app:***@h`"
/// );
/// ```
pub fn redact_secrets_of(url: &str, text: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    for secret in secrets_of(url) {
        secrets.push(secret.to_owned());
        // As a form-urlencoded parser shows it.
        if let Ok(decoded) = percent_decode(&secret.replace('+', " ")) {
            secrets.push(decoded);
        }
        if let Ok(decoded) = percent_decode(secret) {
            secrets.push(decoded);
        }
    }
    secrets.retain(|s| !s.is_empty());
    // Longest first, so that no part of a longer one is left behind.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in &secrets {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// What [`redact`] masks in `url`: the user info's password (or bare
/// token) after every `://` (a malformed URL may hold another URL), and
/// the values of secret options.
fn secrets_of(url: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (at, _) in url.match_indices("://") {
        let rest = &url[at + 3..];
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some((userinfo, _)) = rest[..end].rsplit_once('@') {
            out.push(
                userinfo
                    .split_once(':')
                    .map_or(userinfo, |(_, password)| password),
            );
        }
    }
    let Some((_, rest)) = url.split_once("://") else {
        return out;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let tail = &rest[end..];
    if let Some((_, query)) = tail.split_once('?') {
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && is_secret(name)
            {
                out.push(value);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        assert_eq!(percent_decode("a%40b%2Fc").unwrap(), "a@b/c");
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }

    #[test]
    fn redacts_a_url_inside_a_malformed_one() {
        let url = "redis://h?amqp://app:s3cret%41@h";
        assert_eq!(redact(url), "redis://h?amqp://app:***@h");
        assert_eq!(
            redact_secrets_of(url, "unknown field `amqp://app:s3cretA@h`"),
            "unknown field `amqp://app:***@h`"
        );
    }

    #[test]
    fn redacts_user_info_and_secret_options() {
        assert_eq!(redact("amqp://guest:guest@h/%2f"), "amqp://guest:***@h/%2f");
        assert_eq!(redact("memory://"), "memory://");
        assert_eq!(redact("no scheme"), "no scheme");
        let url = "nats://h?creds=/p&token=abc&nkey_seed_password=x";
        let shown = redact(url);
        assert!(!shown.contains("abc") && !shown.contains("=x"), "{shown}");
        assert!(shown.contains("creds=/p"), "{shown}");
    }
}
