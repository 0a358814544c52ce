//! The user record: its validation rules, its JSON views and its Redis persistence.
//!
//! Stored as one hash per user (`user:{u:<id>}`); the cached public profile sits in
//! the same slot so a profile update and its cache invalidation are one MULTI.

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use redis::{AsyncCommands, Script};
use uuid::Uuid;

use crate::{clock, error::AppError, keys, store::Store};

/// Longest `about` text.
pub const MAX_ABOUT_CHARS: usize = 500;
/// Most skills on a profile.
pub const MAX_SKILLS: usize = 20;
/// Longest single skill.
pub const MAX_SKILL_CHARS: usize = 40;
/// Longest first or last name.
pub const MAX_NAME_CHARS: usize = 50;
/// Longest photo URL.
pub const MAX_URL_CHARS: usize = 2048;

/// The stored fields but the password hash: what GET and PATCH /profile read
/// ([`crate::session::WithUser::Profile`]).
pub const PROFILE_FIELDS: [&str; 10] = [
    "id",
    "email",
    "firstName",
    "lastName",
    "about",
    "skills",
    "photoUrl",
    "tier",
    "createdAt",
    "updatedAt",
];

/// A user as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    /// UUIDv7.
    pub id: String,
    /// Lower-cased, trimmed.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Free text, at most [`MAX_ABOUT_CHARS`].
    pub about: String,
    /// At most [`MAX_SKILLS`].
    pub skills: Vec<String>,
    /// An http(s) URL, or empty.
    pub photo_url: String,
    /// `free` or `premium`: picks the rate limit.
    pub tier: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; also the version the cache fill checks against.
    pub updated_at: String,
}

impl User {
    /// A new free-tier user with a fresh UUIDv7.
    pub fn new(email: String, password_hash: String, first_name: String, last_name: String) -> Self {
        let now = clock::now_rfc3339();
        Self {
            id: Uuid::now_v7().to_string(),
            email,
            password_hash,
            first_name,
            last_name,
            about: String::new(),
            skills: Vec::new(),
            photo_url: String::new(),
            tier: "free".into(),
            created_at: now.clone(),
            updated_at: now,
        }
    }

    /// Reads a stored hash; `None` if the hash is empty (no such user).
    pub fn from_fields(mut f: HashMap<String, String>) -> Result<Option<Self>, AppError> {
        if f.is_empty() {
            return Ok(None);
        }
        let mut take = |k: &str| f.remove(k).unwrap_or_default();
        let user = Self {
            id: take("id"),
            email: take("email"),
            password_hash: take("passwordHash"),
            first_name: take("firstName"),
            last_name: take("lastName"),
            about: take("about"),
            skills: serde_json::from_str(&take("skills")).unwrap_or_default(),
            photo_url: take("photoUrl"),
            tier: take("tier"),
            created_at: take("createdAt"),
            updated_at: take("updatedAt"),
        };
        if user.id.is_empty() {
            return Err(AppError::bug("stored user has no id"));
        }
        Ok(Some(user))
    }

    /// The hash fields to store.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("email", self.email.clone()),
            ("passwordHash", self.password_hash.clone()),
            ("firstName", self.first_name.clone()),
            ("lastName", self.last_name.clone()),
            ("about", self.about.clone()),
            (
                "skills",
                serde_json::to_string(&self.skills).unwrap_or_else(|_| "[]".into()),
            ),
            ("photoUrl", self.photo_url.clone()),
            ("tier", self.tier.clone()),
            ("createdAt", self.created_at.clone()),
            ("updatedAt", self.updated_at.clone()),
        ]
    }

    /// What anyone signed in may see.
    pub fn public_view(&self) -> PublicProfile {
        PublicProfile {
            id: self.id.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            about: self.about.clone(),
            skills: self.skills.clone(),
            photo_url: (!self.photo_url.is_empty()).then(|| self.photo_url.clone()),
        }
    }

    /// What the user sees of themselves (never the password hash).
    pub fn own_view(&self) -> OwnProfile {
        OwnProfile {
            profile: self.public_view(),
            email: self.email.clone(),
            tier: self.tier.clone(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }
}

/// A user's public profile: GET /users/{userId}, and every list of people.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicProfile {
    /// UUIDv7.
    #[schema(format = Uuid)]
    pub id: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Free text, at most 500 characters; empty when not set.
    pub about: String,
    /// At most 20.
    pub skills: Vec<String>,
    /// An https URL, or null.
    pub photo_url: Option<String>,
}

/// The caller's own profile: the public one plus what only they see.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnProfile {
    /// The public part.
    #[serde(flatten)]
    pub profile: PublicProfile,
    /// Lower-cased sign-in email.
    pub email: String,
    /// `free` or `premium` (rate limits).
    pub tier: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

// ---- validation rules (pure; one test each) ----

/// Lower-cases and checks an email; uniqueness is case-insensitive because of this.
pub fn parse_email(raw: &str) -> Result<String, AppError> {
    let email = raw.trim().to_lowercase();
    if email.len() > 254 || !email_address::EmailAddress::is_valid(&email) {
        return Err(AppError::Validation("email is not a valid address".into()));
    }
    Ok(email)
}

/// Whether `c` is a Unicode format character (general category Cf, Unicode 15.1):
/// invisible, and the bidi overrides and isolates among them (U+202A–U+202E,
/// U+2066–U+2069) make text display in another order than it is stored — a name that
/// reads as someone else's, a message whose shown text is not its content. Listed by
/// hand: the set is small and stable, and no Unicode-tables crate is in the workspace.
pub fn is_format_char(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// 400 if `text` (the field `field`) holds a format character ([`is_format_char`]).
/// Free text (`free_text`: about, messages) may keep U+200D ZERO WIDTH JOINER, which
/// builds emoji sequences (👩‍💻) and reorders nothing; names and skills may not.
pub fn reject_format_chars(field: &str, text: &str, free_text: bool) -> Result<(), AppError> {
    if text
        .chars()
        .any(|c| is_format_char(c) && !(free_text && c == '\u{200D}'))
    {
        return Err(AppError::Validation(format!(
            "{field} must not contain invisible formatting characters (such as bidi overrides)"
        )));
    }
    Ok(())
}

/// A first or last name: trimmed, 1..=50 characters, no control or format characters.
pub fn parse_name(field: &str, raw: &str) -> Result<String, AppError> {
    let name = raw.trim();
    let len = name.chars().count();
    if len == 0 || len > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AppError::Validation(format!(
            "{field} must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    reject_format_chars(field, name, false)?;
    Ok(name.to_string())
}

/// `about`: at most 500 characters, no format characters.
pub fn parse_about(raw: &str) -> Result<String, AppError> {
    let about = raw.trim();
    if about.chars().count() > MAX_ABOUT_CHARS {
        return Err(AppError::Validation(format!(
            "about must be at most {MAX_ABOUT_CHARS} characters"
        )));
    }
    reject_format_chars("about", about, true)?;
    Ok(about.to_string())
}

/// `skills`: at most 20, each 1..=40 characters, duplicates (any case) removed.
pub fn parse_skills(raw: &[String]) -> Result<Vec<String>, AppError> {
    if raw.len() > MAX_SKILLS {
        return Err(AppError::Validation(format!("at most {MAX_SKILLS} skills")));
    }
    let mut skills: Vec<String> = Vec::with_capacity(raw.len());
    for s in raw {
        let s = s.trim();
        let len = s.chars().count();
        if len == 0 || len > MAX_SKILL_CHARS {
            return Err(AppError::Validation(format!(
                "each skill must be 1 to {MAX_SKILL_CHARS} characters"
            )));
        }
        reject_format_chars("skills", s, false)?;
        if !skills.iter().any(|k| k.eq_ignore_ascii_case(s)) {
            skills.push(s.to_string());
        }
    }
    Ok(skills)
}

/// `photoUrl`: an absolute https URL, or empty to remove the photo. Plain http would
/// let anyone on a viewer's network swap the picture (and mixes content into an https
/// page); credentials in the URL are refused. Stored as the `url` crate serializes it —
/// lower-cased host, punycode, percent-encoding, no default port — so what is stored is
/// exactly what every client will request, whatever spelling was sent.
pub fn parse_photo_url(raw: &str) -> Result<String, AppError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(String::new());
    }
    let invalid = || AppError::Validation("photoUrl must be an https URL".into());
    if raw.len() > MAX_URL_CHARS {
        return Err(invalid());
    }
    let url = url::Url::parse(raw).map_err(|_| invalid())?;
    if url.scheme() != "https" || url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid());
    }
    let normalised = url.to_string();
    if normalised.len() > MAX_URL_CHARS {
        return Err(invalid());
    }
    Ok(normalised)
}

/// A user id from a path: must be a UUID (400 otherwise, before any Redis call).
pub fn parse_user_id(raw: &str) -> Result<String, AppError> {
    Uuid::parse_str(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| AppError::Validation("userId must be a UUID".into()))
}

// ---- persistence ----

/// Fills the public-profile cache only if the user was not updated since we read it,
/// so a slow reader can never overwrite a PATCH's invalidation with stale data.
/// Its one write comes last, after the HGET that fails on a record of the wrong type,
/// and SET replaces a value of any type: an error leaves nothing written.
static FILL_CACHE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], 'updatedAt') == ARGV[1] then \
           redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) return 1 end return 0",
    )
});

/// Claims `email` for `user_id`. `false` if it is taken: exactly one of two racing signups wins.
pub async fn claim_email(store: &Store, email: &str, user_id: &str) -> Result<bool, AppError> {
    let set: Option<String> = redis::cmd("SET")
        .arg(keys::email(email))
        .arg(user_id)
        .arg("NX")
        .query_async(&mut store.conn())
        .await?;
    Ok(set.is_some())
}

/// Takes back a signup whose writes failed: the email claim, and whatever of the
/// account [`insert_pipeline`] and its session write did manage to store (a pipeline
/// runs every command even when one fails), so the failed request leaves nothing
/// behind and a retry can claim the email again. DEL cannot fail on a key's type;
/// a broken index fails only its own ZREM, and the DELs still run.
pub async fn abandon_signup(store: &Store, user: &User, session_key: &str) -> Result<(), AppError> {
    redis::pipe()
        .del(keys::email(&user.email))
        .ignore()
        .del(keys::user(&user.id))
        .ignore()
        .del(session_key)
        .ignore()
        .del(keys::sessions(&user.id))
        .ignore()
        .zrem(keys::USERS, &user.id)
        .ignore()
        .query_async::<()>(&mut store.conn())
        .await?;
    Ok(())
}

/// The writes that create a user: the record and its place in the feed's index. One
/// pipeline, not MULTI: the two keys live in different slots. The commands are
/// independent, so one can fail (a key of the wrong type) while the others apply;
/// the signup handler then takes the account back with [`abandon_signup`].
pub fn insert_pipeline(user: &User) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.hset_multiple(keys::user(&user.id), &user.to_fields())
        .ignore()
        .zadd(keys::USERS, &user.id, 0)
        .ignore();
    pipe
}

/// Loads a user; `None` if there is none.
pub async fn get(store: &Store, user_id: &str) -> Result<Option<User>, AppError> {
    let fields: HashMap<String, String> = store.conn().hgetall(keys::user(user_id)).await?;
    User::from_fields(fields)
}

/// Adds the cache read of the public profile (cache-aside) to a pipeline the caller sends anyway (GET
/// /users/{userId}: the authentication round trip); hand its reply to [`public_profile_from`].
pub fn read_cached_profile(pipe: &mut redis::Pipeline, user_id: &str) {
    pipe.get(keys::public_profile(user_id));
}

/// The public profile given the cache's reply (`cached`, from [`read_cached_profile`]): none
/// more on a hit, two on a miss (the record, then the cache fill).
pub async fn public_profile_from(
    store: &Store,
    user_id: &str,
    ttl: Duration,
    cached: Option<String>,
) -> Result<Option<PublicProfile>, AppError> {
    if let Some(json) = cached.and_then(|c| serde_json::from_str(&c).ok()) {
        return Ok(Some(json));
    }
    let Some(user) = get(store, user_id).await? else {
        return Ok(None);
    };
    let view = user.public_view();
    let _: i64 = FILL_CACHE
        .key(keys::user(user_id))
        .key(keys::public_profile(user_id))
        .arg(&user.updated_at)
        .arg(serde_json::to_string(&view).unwrap_or_default())
        .arg(ttl.as_secs())
        .invoke_async(&mut store.conn())
        .await?;
    Ok(Some(view))
}

/// Public views of several users in one round trip (a pipeline), in the order given;
/// ids with no user are skipped.
pub async fn summaries(store: &Store, user_ids: &[String]) -> Result<Vec<PublicProfile>, AppError> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in user_ids {
        pipe.hgetall(keys::user(id));
    }
    let rows: Vec<HashMap<String, String>> = pipe.query_async(&mut store.conn()).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(user) = User::from_fields(row)? {
            out.push(user.public_view());
        }
    }
    Ok(out)
}

/// Writes changed profile fields and drops the cached public profile, atomically (one slot, one MULTI).
///
/// MULTI does not roll back: if the record were not a hash, HSET would fail and the
/// DEL would still run. That partial application is harmless: it only drops a cache
/// entry, which the next read fills again. (It cannot happen on the way here anyway:
/// authentication reads the record with HGET, which fails first.)
pub async fn update_profile(store: &Store, user_id: &str, fields: &[(&'static str, String)]) -> Result<(), AppError> {
    let () = redis::pipe()
        .atomic()
        .hset_multiple(keys::user(user_id), fields)
        .ignore()
        .del(keys::public_profile(user_id))
        .ignore()
        .query_async(&mut store.conn())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_fields_are_every_stored_field_but_the_password_hash() {
        let user = User::new("a@b.c".into(), "hash".into(), "A".into(), "B".into());
        let stored: Vec<&str> = user
            .to_fields()
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| *k != "passwordHash")
            .collect();
        assert_eq!(stored, PROFILE_FIELDS);
    }

    #[test]
    fn emails_are_lower_cased_and_trimmed() {
        assert_eq!(parse_email("  Ada@Example.COM ").unwrap(), "ada@example.com");
    }

    #[test]
    fn an_email_without_at_sign_is_rejected() {
        assert!(parse_email("ada.example.com").is_err());
    }

    #[test]
    fn an_empty_name_is_rejected() {
        assert!(parse_name("firstName", "   ").is_err());
    }

    #[test]
    fn a_name_over_fifty_characters_is_rejected() {
        assert!(parse_name("lastName", &"x".repeat(51)).is_err());
    }

    #[test]
    fn about_may_be_500_characters_but_not_501() {
        assert!(parse_about(&"é".repeat(500)).is_ok());
        assert!(parse_about(&"é".repeat(501)).is_err());
    }

    #[test]
    fn twenty_one_skills_are_too_many() {
        let skills: Vec<String> = (0..21).map(|i| format!("s{i}")).collect();
        assert!(parse_skills(&skills).is_err());
    }

    #[test]
    fn duplicate_skills_are_merged() {
        let skills = vec!["Rust".to_string(), "rust".to_string(), " Go ".to_string()];
        assert_eq!(parse_skills(&skills).unwrap(), vec!["Rust", "Go"]);
    }

    #[test]
    fn photo_url_must_be_https_and_is_stored_normalised() {
        assert!(parse_photo_url("https://cdn.example.com/a.png").is_ok());
        assert!(parse_photo_url("http://cdn.example.com/a.png").is_err());
        assert!(parse_photo_url("https://user:pw@cdn.example.com/a.png").is_err());
        assert_eq!(
            parse_photo_url("HTTPS://CDN.Example.com:443/a b.png").unwrap(),
            "https://cdn.example.com/a%20b.png"
        );
        assert!(parse_photo_url("javascript:alert(1)").is_err());
        assert!(parse_photo_url("not a url").is_err());
        assert_eq!(parse_photo_url("").unwrap(), "");
    }

    #[test]
    fn names_and_texts_refuse_bidi_overrides_and_invisible_characters() {
        assert!(parse_name("firstName", "Ada\u{202E}nimda").is_err());
        assert!(parse_name("firstName", "A\u{200B}da").is_err());
        assert!(parse_name("firstName", "A\u{2066}da").is_err());
        assert!(parse_about("hi \u{202D}there").is_err());
        assert!(parse_skills(&["Ru\u{FEFF}st".to_string()]).is_err());
        assert!(parse_about("coder 👩\u{200D}💻").is_ok());
        assert!(parse_name("firstName", "Zoë").is_ok());
    }

    #[test]
    fn user_ids_must_be_uuids() {
        assert!(parse_user_id("123").is_err());
        assert!(parse_user_id("0190c3a4-0000-7000-8000-000000000001").is_ok());
    }

    #[test]
    fn stored_fields_round_trip() {
        let mut u = User::new("a@b.co".into(), "h".into(), "Ada".into(), "Lovelace".into());
        u.skills = vec!["rust".into()];
        let fields = u.to_fields().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(User::from_fields(fields).unwrap(), Some(u));
    }

    #[test]
    fn the_own_view_never_contains_the_password_hash() {
        let u = User::new("a@b.co".into(), "SECRET-HASH".into(), "Ada".into(), "L".into());
        assert!(!serde_json::to_string(&u.own_view()).unwrap().contains("SECRET-HASH"));
    }
}
