//! mailmux SMTP listeners and sessions
