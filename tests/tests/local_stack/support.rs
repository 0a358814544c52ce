//! A local gateway on an edited copy of template.yaml (or with shorter limits), serving
//! the handlers of an existing [`Stack`] on its own port.

use std::{net::SocketAddr, sync::Arc};

use devconnect_tests::Stack;
use local_gateway::{
    default_template_path,
    functions::Functions,
    server::{self, Gateway},
    template::Template,
};

/// template.yaml's text with each `(from, to)` replaced once; panics if `from` is missing,
/// so a template change cannot silently turn a test into one that checks nothing.
pub fn template_with(edits: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(default_template_path()).expect("template.yaml");
    for (from, to) in edits {
        assert!(text.contains(from), "template.yaml no longer contains {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

/// A gateway serving `template_text` with `stack`'s clients, after `adjust` (limits,
/// timeouts) had its say. Stops when dropped.
pub struct LocalGateway {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LocalGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LocalGateway {
    pub async fn start(stack: &Stack, template_text: &str, adjust: impl FnOnce(&mut Gateway)) -> Self {
        let template = Template::parse(template_text).expect("the edited template is emulated");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut gateway = Gateway::new(template, Functions::new(&stack.state, &base_url));
        adjust(&mut gateway);
        let app = server::router(Arc::new(gateway)).into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base_url, server }
    }

    /// `ws://127.0.0.1:<port>/ws`.
    pub fn ws_url(&self) -> String {
        format!(
            "{}{}",
            self.base_url.replacen("http", "ws", 1),
            local_gateway::websocket::PATH
        )
    }
}
