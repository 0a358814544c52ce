//! Message rules, free of HTTP and Redis.

use devconnect::AppError;

/// Longest message, in characters.
pub const MAX_TEXT_CHARS: usize = 2_000;
/// Default history page.
pub const DEFAULT_PAGE: usize = 50;
/// Largest history page.
pub const MAX_PAGE: usize = 100;

/// A message text: trimmed, 1..=2000 characters, no control characters except newlines
/// and tabs, no format characters (bidi overrides would show a text other than the one sent).
pub fn parse_text(raw: &str) -> Result<String, AppError> {
    let text = raw.trim();
    let len = text.chars().count();
    if len == 0 || len > MAX_TEXT_CHARS {
        return Err(AppError::Validation(format!(
            "text must be 1 to {MAX_TEXT_CHARS} characters"
        )));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(AppError::Validation("text must not contain control characters".into()));
    }
    devconnect::user::reject_format_chars("text", text, true)?;
    Ok(text.to_string())
}

/// A history cursor: a message id as returned by this API (`<ms>-<seq>`).
pub fn parse_cursor(raw: &str) -> Result<String, AppError> {
    let valid = raw
        .split_once('-')
        .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok());
    if !valid {
        return Err(AppError::Validation("before must be a message id".into()));
    }
    Ok(raw.to_string())
}

/// Nobody messages themselves.
pub fn check_not_self(me: &str, other: &str) -> Result<(), AppError> {
    if me == other {
        return Err(AppError::Validation("you cannot message yourself".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed() {
        assert_eq!(parse_text("  hi there \n").unwrap(), "hi there");
    }

    #[test]
    fn blank_text_is_rejected() {
        assert!(parse_text(" \n\t ").is_err());
    }

    #[test]
    fn two_thousand_characters_are_allowed_but_not_more() {
        assert!(parse_text(&"ü".repeat(2_000)).is_ok());
        assert!(parse_text(&"ü".repeat(2_001)).is_err());
    }

    #[test]
    fn control_characters_other_than_newlines_are_rejected() {
        assert!(parse_text("line one\nline two").is_ok());
        assert!(parse_text("bell\u{7}").is_err());
    }

    #[test]
    fn bidi_overrides_are_rejected_but_emoji_sequences_are_not() {
        assert!(parse_text("pay \u{202E}gnp.exe").is_err());
        assert!(parse_text("hi\u{2069}").is_err());
        assert!(parse_text("team 👩\u{200D}💻").is_ok());
    }

    #[test]
    fn cursors_must_look_like_message_ids() {
        assert!(parse_cursor("1732672800000-0").is_ok());
        assert!(parse_cursor("yesterday").is_err());
        assert!(parse_cursor("1-").is_err());
    }
}
