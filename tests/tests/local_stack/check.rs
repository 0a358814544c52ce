//! `local-gateway check`, which `./infra/local/run` runs before starting anything (and
//! stops on): the binary's exit status and message, on copies of template.yaml.

use std::process::{Command, Output};

use crate::support::template_with;

/// The gateway's own `main.rs`, built as a binary of this package (see tests/Cargo.toml),
/// so no test has to run cargo while other builds hold the target directory.
pub const GATEWAY: &str = env!("CARGO_BIN_EXE_local-gateway-under-test");

/// `local-gateway check` on `template_text`, with `LOCAL_GATEWAY_IGNORE` = `ignore`.
fn check(template_text: &str, ignore: Option<&str>) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("template.yaml");
    std::fs::write(&path, template_text).expect("write the copy");
    let mut command = Command::new(GATEWAY);
    command
        .arg("check")
        .env("TEMPLATE", &path)
        .env_remove("LOCAL_GATEWAY_IGNORE");
    if let Some(ignore) = ignore {
        command.env("LOCAL_GATEWAY_IGNORE", ignore);
    }
    command.output().expect("local-gateway runs")
}

/// An IAM authorizer on the HTTP API: a real SAM property the gateway does not emulate.
fn with_an_authorizer() -> String {
    template_with(&[(
        "      CorsConfiguration:\n",
        "      Auth: { EnableIamAuthorizer: true }\n      CorsConfiguration:\n",
    )])
}

#[test]
fn an_unsupported_property_in_a_copy_of_the_template_makes_check_exit_non_zero_naming_it() {
    let output = check(&with_an_authorizer(), None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "check passed: {stderr}");
    assert!(stderr.contains("HttpApi") && stderr.contains("Auth"), "{stderr}");
}

#[test]
fn the_unsupported_property_opted_out_by_name_passes_the_check_and_is_listed() {
    let output = check(&with_an_authorizer(), Some("HttpApi.Auth"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("HttpApi.Auth"), "{stderr}");
}

#[test]
fn the_committed_template_passes_the_check() {
    let output = check(&template_with(&[]), None);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
