//! mailmux admin REST API
