//! Issue 13, notification channels: the router and preferences (E1), and the email and
//! SMS senders (E2), against a real redis-server and a real broker (tansu); the AWS
//! providers are the moto double.

mod cooldown;
mod preferences;
mod router;
mod senders;
