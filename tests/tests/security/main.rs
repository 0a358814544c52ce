//! Security to OWASP ASVS level 2: sessions that end everywhere, lockout that cannot
//! lock out a victim, bounded abuse paths. One test binary, a module per concern.

mod input;
mod lists;
mod realtime;
mod sessions;
