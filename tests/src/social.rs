//! Shortcuts for tests of the social functions.

use serde_json::json;

use crate::{stack::Reply, Client, Stack};

/// A signed-up user: their client and id.
pub struct User {
    /// Authenticated client.
    pub client: Client,
    /// User id.
    pub id: String,
}

impl Stack {
    /// Signs up `name@example.com`.
    pub async fn user(&self, name: &str) -> User {
        let (client, id) = self.signed_up(&format!("{name}@example.com")).await;
        User { client, id }
    }

    /// Makes `a` and `b` connections (a sends interested, b accepts).
    pub async fn connect(&self, a: &User, b: &User) {
        let sent = a.send_request("interested", &b.id).await;
        assert_eq!(sent.status, 201, "{}", sent.body);
        let id = sent.body["request"]["id"].as_str().unwrap().to_string();
        let accepted = b
            .client
            .post(&format!("/requests/review/accepted/{id}"), json!({}))
            .await;
        assert_eq!(accepted.status, 200, "{}", accepted.body);
    }
}

impl Stack {
    /// A user with a chosen id (e.g. one named in ADMIN_USER_IDS), written straight to Redis.
    pub async fn user_with_id(&self, id: &str) -> User {
        let mut record = devconnect::user::User::new(
            format!("{id}@example.com"),
            "unused".into(),
            "Admin".into(),
            "User".into(),
        );
        record.id = id.to_string();
        let issued = devconnect::session::issue(id);
        let mut pipe = devconnect::user::insert_pipeline(&record);
        pipe.set_ex(&issued.key, 1, 3600).ignore();
        pipe.query_async::<()>(&mut self.state.store.conn())
            .await
            .expect("insert");
        User {
            client: self.client().with_token(&issued.token),
            id: id.to_string(),
        }
    }
}

impl User {
    /// POST /requests/send/{status}/{to}.
    pub async fn send_request(&self, status: &str, to: &str) -> Reply {
        self.client
            .post(&format!("/requests/send/{status}/{to}"), json!({}))
            .await
    }

    /// POST /messages/{to}.
    pub async fn message(&self, to: &str, text: &str) -> Reply {
        self.client
            .post(&format!("/messages/{to}"), json!({ "text": text }))
            .await
    }
}
