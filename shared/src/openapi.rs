//! The OpenAPI 3.1 document of the HTTP API (`docs/openapi.json`), generated from the types.
//!
//! Each HTTP function crate annotates its handlers with `#[utoipa::path]` and exposes its
//! part as `openapi()`; the response bodies are the same `Serialize + ToSchema` structs the
//! handlers return through [`crate::api::Reply`], so the document cannot drift from the code.
//! [`document`] joins the parts and adds, by rule, what every route shares, so no handler
//! repeats it (and none can forget it):
//! - security: an operation that declares none needs a session (bearer token or the session
//!   cookie) and can answer 401; one declaring `security(())` is anonymous; one declaring
//!   `security((), ("bearer" = []))` takes a token optionally.
//! - rate limits: every operation except the optionally authenticated ones (GET /health) is
//!   counted, so its 2xx answers carry `X-RateLimit-*` and it can answer 429 with `Retry-After`.
//! - 400 for any operation with parameters or a body, 413 and 503 for all; every answer carries
//!   `X-Request-Id` and `Cache-Control: no-store`; every error is [`ErrorBody`].

use serde::{Deserialize, Serialize};
use utoipa::openapi::{
    header::HeaderBuilder,
    path::Operation,
    response::{Response, ResponseBuilder},
    schema::{ObjectBuilder, SchemaType, Type},
    security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    ContentBuilder, InfoBuilder, Ref, RefOr,
};
pub use utoipa::{openapi::OpenApi, ToSchema};

use crate::session::COOKIE_NAME;

/// The security scheme of `Authorization: Bearer <token>`.
pub const BEARER: &str = "bearer";
/// The security scheme of the HttpOnly session cookie set by signup and login.
pub const SESSION_COOKIE: &str = "sessionCookie";

/// One HTTP function's part: its name (the operations' tag and operationId prefix) and
/// the function returning its `#[derive(utoipa::OpenApi)]` document.
pub type Part = (&'static str, fn() -> OpenApi);

/// Every error response body: `{"error":{"code","message","requestId"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `validation_failed`, `bad_request`, `unauthorized`,
    /// `forbidden`, `not_found`, `conflict`, `payload_too_large`, `rate_limited`, `unavailable`, ...
    pub code: String,
    /// For people; never contains internals.
    pub message: String,
    /// API Gateway's request id, also in the `X-Request-Id` header and the logs.
    pub request_id: String,
}

/// The shared error answers, as `components.responses` names.
const ERRORS: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "Malformed JSON, wrong types, unknown fields, a bad path id or query parameter",
    ),
    ("401", "Unauthorized", "Missing, invalid, expired or revoked session"),
    ("413", "PayloadTooLarge", "The body is larger than 64 KiB"),
    (
        "429",
        "RateLimited",
        "Too many requests in this window; retry after `Retry-After` seconds",
    ),
    ("503", "Unavailable", "A dependency (Redis) is unreachable; retry later"),
];

/// Joins the functions' parts into the document of the whole HTTP API; see the module docs
/// for what is added by rule. Deterministic: the same code gives the same bytes.
pub fn document(parts: &[Part]) -> OpenApi {
    let mut doc = OpenApi::new(
        InfoBuilder::new()
            .title("DevConnect HTTP API")
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(
                "The HTTP API of DevConnect (API Gateway HTTP API -> Lambda). JSON, camelCase. \
                 Generated from the Rust types by utoipa; do not edit docs/openapi.json by hand.",
            ))
            .build(),
        utoipa::openapi::Paths::new(),
    );
    for (name, part) in parts {
        let mut part = part();
        for item in part.paths.paths.values_mut() {
            for op in operations_mut(item) {
                op.tags = Some(vec![(*name).to_string()]);
                let id = op.operation_id.take().unwrap_or_default();
                op.operation_id = Some(format!("{name}_{id}"));
            }
        }
        doc.merge(part);
    }
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            add_shared_answers(op);
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("ErrorBody".into(), <ErrorBody as utoipa::PartialSchema>::schema());
    components
        .schemas
        .insert("ErrorDetail".into(), <ErrorDetail as utoipa::PartialSchema>::schema());
    for (_, name, description) in ERRORS {
        components.responses.insert(
            (*name).into(),
            RefOr::T(error_response(description, *name == "RateLimited")),
        );
    }
    components.security_schemes.insert(
        BEARER.into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The token from POST /auth/signup or POST /auth/login"))
                .build(),
        ),
    );
    components.security_schemes.insert(
        SESSION_COOKIE.into(),
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            COOKIE_NAME,
            "The HttpOnly session cookie set by signup and login (`dc_session` when COOKIE_SECURE=false)",
        ))),
    );
    doc
}

/// The route keys (`METHOD /path`) the document describes, e.g. `POST /auth/signup`.
pub fn route_keys(doc: &OpenApi) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
        ] {
            if op.is_some() {
                keys.insert(format!("{method} {path}"));
            }
        }
    }
    keys
}

/// The document as committed: pretty JSON and a final newline.
pub fn to_json(doc: &OpenApi) -> String {
    let mut json = doc.to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

fn operations_mut(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
    ]
    .into_iter()
    .flatten()
}

/// The rules of the module docs, applied to one operation.
fn add_shared_answers(op: &mut Operation) {
    let anonymous = SecurityRequirement::default();
    let session = || {
        vec![
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            SecurityRequirement::new(SESSION_COOKIE, Vec::<String>::new()),
        ]
    };
    let optional = match &op.security {
        None => {
            op.security = Some(session());
            add_error(op, "401");
            false
        }
        Some(reqs) => reqs.contains(&anonymous) && reqs.len() > 1,
    };
    if op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
        add_error(op, "400");
    }
    add_error(op, "413");
    add_error(op, "503");
    if !optional {
        add_error(op, "429");
        for (status, answer) in op.responses.responses.iter_mut() {
            if let (true, RefOr::T(response)) = (status.starts_with('2'), answer) {
                add_rate_headers(response);
            }
        }
    }
    for answer in op.responses.responses.values_mut() {
        if let RefOr::T(response) = answer {
            add_common_headers(response);
        }
    }
}

fn add_error(op: &mut Operation, status: &str) {
    let Some((_, name, _)) = ERRORS.iter().find(|(s, _, _)| *s == status) else {
        return;
    };
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
}

fn error_response(description: &str, rate_limited: bool) -> Response {
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    if rate_limited {
        add_rate_headers(&mut response);
        response.headers.insert(
            "Retry-After".into(),
            header(Type::Integer, "Seconds until the window resets"),
        );
    }
    add_common_headers(&mut response);
    response
}

fn add_rate_headers(response: &mut Response) {
    for (name, description) in [
        (
            "X-RateLimit-Limit",
            "Requests allowed in the current window for this caller's tier",
        ),
        ("X-RateLimit-Remaining", "Requests left in the current window"),
        ("X-RateLimit-Reset", "Seconds until the current window resets"),
    ] {
        response
            .headers
            .entry(name.into())
            .or_insert_with(|| header(Type::Integer, description));
    }
}

fn add_common_headers(response: &mut Response) {
    response
        .headers
        .entry("X-Request-Id".into())
        .or_insert_with(|| header(Type::String, "API Gateway's request id, also in error bodies"));
    response
        .headers
        .entry("Cache-Control".into())
        .or_insert_with(|| header(Type::String, "Always `no-store`"));
}

fn header(ty: Type, description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(SchemaType::Type(ty)))
        .description(Some(description))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(secured, anonymous))]
    struct Sample;

    /// A secured sample route.
    #[utoipa::path(get, path = "/a/{id}", params(("id" = String, Path)), responses((status = 200, body = ErrorDetail)))]
    #[allow(dead_code)]
    fn secured() {}

    /// An anonymous sample route.
    #[utoipa::path(post, path = "/b", security(()), responses((status = 204)))]
    #[allow(dead_code)]
    fn anonymous() {}

    fn sample() -> OpenApi {
        <Sample as utoipa::OpenApi>::openapi()
    }

    #[test]
    fn an_operation_without_security_needs_a_session_and_can_answer_401() {
        let doc = serde_json::to_value(document(&[("x", sample)])).unwrap();
        let op = &doc["paths"]["/a/{id}"]["get"];
        assert_eq!(op["security"][0][BEARER], serde_json::json!([]));
        assert!(op["responses"]["401"].is_object(), "{op}");
        assert!(op["responses"]["400"].is_object(), "a path parameter can be bad: {op}");
        assert!(
            op["responses"]["200"]["headers"]["X-RateLimit-Remaining"].is_object(),
            "{op}"
        );
    }

    #[test]
    fn an_anonymous_operation_has_no_401() {
        let doc = serde_json::to_value(document(&[("x", sample)])).unwrap();
        let op = &doc["paths"]["/b"]["post"];
        assert!(op["responses"]["401"].is_null(), "{op}");
        assert!(op["responses"]["429"].is_object(), "{op}");
        assert_eq!(op["operationId"], "x_anonymous");
    }

    #[test]
    fn route_keys_name_method_and_path() {
        let keys: Vec<String> = route_keys(&document(&[("x", sample)])).into_iter().collect();
        assert_eq!(keys, ["GET /a/{id}", "POST /b"]);
    }
}
