//! The RSA-2048 test key both halves' tests sign with.

/// An RSA-2048 key for the tests (ring cannot generate RSA keys), made with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` (then `openssl pkcs8
/// -topk8 -nocrypt -outform DER`): PKCS#8 and
/// the SubjectPublicKeyInfo published as p=.
pub(crate) const RSA_PKCS8: &str = concat!(
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCR7wL6EzaSD6mMIebSwm43D97SKll7sECcrbdj",
    "5iiu2up7KkoYlAzIHYWQFRsptf3br7IQUgTTVymz4QesbUAT5PoLirHkGBOLewM6ugZ18EWAdKJ3hq3eRDlCB2Ot",
    "fHf8sieHR1EROXmtawLwL7sGZt8KuUMXokFPy75QNBE4BlVeWq6OCu4LWv/Ntd6BchXC78xXEtBJKLnUhms5J2SK",
    "pStwf+dnQAXVMYRP2zZZFsAH/XnFhRIgAtyJ4vYBYeYdIPRNMnYc54cG7jAyP9WVqplSVnwnp02NR6bv5LBD5f/Z",
    "4m0rQaRig4Fpe+dKz7gDJJXB3hjJCtrRZWBlofPtAgMBAAECggEAHNI6wQdu4WFo/5VJeEnwiPzgKZs2EYTRefAg",
    "FkGEOuZe5WTIffqtXI9iC77zXqVEBfF45hrAu7mM8arpgE8SVuuDy6hAclcj8wngLSbEtGG35EMEvDzz1UAdm9II",
    "SGDa9KP9xQybcN6sTojiK2wN0JmcBsroeoAvzHHlfAMQfIMNN2+zh1TUhdPFbdcfAONUty9pXLHWRuZDu8Ru43tB",
    "I963T+JPOIYQUtWmnTPgJUL5hv1300u7WFteIGOOskZBPWZzDW5k63SI4M95WtWGVlQI/CMPOxo+OrniuWu3GsFe",
    "oZ/26NIiyYyT/wChymDDSQt9LMbU0fcUNIsqNn4H2QKBgQDNcyC0Cz93mQYO4/MH5rwZeEwzae5HeaiY90fJrFGP",
    "I1ifsyzmNOMiJz0zHsCfn6ZC67JbFQyJ9YPfZniFQlnsbrt4TOk6mKQhjuIkSdb6VT7Ab/X3ledjmxlAPjyxXZoK",
    "czeUu6A2PhkmYzRwq0PcGqhPLGW9g7waUOMzRf7hGQKBgQC11xVjhSLqt5xP7DAbyPEaEqw/5UWVyR26GofLTLM/",
    "jFFN0Mi11V9y44pI6tclhgR6C6edCj63U5EwwWs4UOykFMRX/dMeCiBF1MMse206paBPDu10BrdWk28uoVmVLuyn",
    "CH/Tgq51EOlS3oL7PmrSDB8D2bOP3wJuw6jacNaf9QKBgD4Hk4komDn41q5qPndVP9eEzaT8R7gG0FOW3XLTdzB7",
    "YIefJmA++ZDXPhAQKeJH5n/v/8KmQUnp+a3al2rMlK/g4vM4bXaGnY+QP1Drhl/Amxio9R+Sf/E/48jUwahfdWHQ",
    "VaivWXjnGNrROwUFgJCU79ovsmwcuQ9M+rwBVyoJAoGBAJVrM2wfjl2Imq0hyzZJm7Rs+5VVdCRsqjyuaD8pu3DQ",
    "gE6M7SBdQJ1LU+ou7rMquKsAwK5OKNLDnF6P0ObpuEnrtpsHO19HutUmy2nV0h+K0XulLIFWs3g0lfufIdlwQY3P",
    "chn/HBOd3dv2c3K4C1amFyY20VG7Umhp5mn4pqOxAoGAasKsQT10mEWwCXcZNfnMJNazFe6T9W6McG4aTHZJQf9d",
    "wq+TjCsFH/HJgGOEnyun0XFHrUt5HXCClJrEh67Rs51ufb8D2iCdeVXKyRPTHARG8AyGAZhjuWmf6LtqsZ1AtjLA",
    "2UTFjD3oxbwg34FeX7mmXWcDB+QsYHcLKxtjz0k=",
);
pub(crate) const RSA_SPKI: &str = concat!(
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAke8C+hM2kg+pjCHm0sJuNw/e0ipZe7BAnK23Y+Yortrq",
    "eypKGJQMyB2FkBUbKbX926+yEFIE01cps+EHrG1AE+T6C4qx5BgTi3sDOroGdfBFgHSid4at3kQ5QgdjrXx3/LIn",
    "h0dRETl5rWsC8C+7BmbfCrlDF6JBT8u+UDQROAZVXlqujgruC1r/zbXegXIVwu/MVxLQSSi51IZrOSdkiqUrcH/n",
    "Z0AF1TGET9s2WRbAB/15xYUSIALcieL2AWHmHSD0TTJ2HOeHBu4wMj/VlaqZUlZ8J6dNjUem7+SwQ+X/2eJtK0Gk",
    "YoOBaXvnSs+4AySVwd4YyQra0WVgZaHz7QIDAQAB",
);
