//! Keeping secrets out of what corral shows: values of secret-looking variables, and the
//! password in URLs (`postgres://user:PASSWORD@host/db`), wherever they appear.

use std::borrow::Cow;

/// What a hidden secret is shown as.
pub const MASK: &str = "****";

/// Whether a variable's name says it holds a secret.
pub fn looks_secret(key: &str) -> bool {
    const HINTS: &[&str] = &[
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "PASS",
        "KEY",
        "CREDENTIAL",
        "AUTH",
        "PRIVATE",
    ];
    let upper = key.to_ascii_uppercase();
    HINTS.iter().any(|h| upper.contains(h))
}

/// A variable's value as corral shows it.
pub fn shown_value<'a>(key: &str, value: &'a str) -> Cow<'a, str> {
    if looks_secret(key) {
        MASK.into()
    } else {
        mask_urls(value)
    }
}

/// `text` with the password of every `scheme://user:password@` replaced by [`MASK`].
pub fn mask_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the path, query, fragment or a space.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_and_the_rest_kept() {
        assert_eq!(
            mask_urls("postgres://u:PW@db:5432/app?sslmode=require"),
            "postgres://u:****@db:5432/app?sslmode=require"
        );
        assert_eq!(
            mask_urls("a=redis://:s3cr3t@cache b=https://example.com/x@y c=amqp://guest@mq"),
            "a=redis://:****@cache b=https://example.com/x@y c=amqp://guest@mq"
        );
        assert_eq!(mask_urls("no url here"), "no url here");
        assert_eq!(mask_urls("http://u:p:q@h"), "http://u:****@h");
    }

    #[test]
    fn secret_names_hide_the_whole_value() {
        assert_eq!(shown_value("API_TOKEN", "abc"), MASK);
        assert_eq!(
            shown_value("DATABASE_URL", "postgres://u:PW@h/db"),
            "postgres://u:****@h/db"
        );
        assert_eq!(shown_value("MODE", "prod"), "prod");
    }
}
