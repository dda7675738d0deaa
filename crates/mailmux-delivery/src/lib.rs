//! mailmux outbound transports: direct MX, smarthost; DSN bounces
