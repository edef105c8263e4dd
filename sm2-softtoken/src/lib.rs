//! sm2-softtoken: a software PKCS#11 module with SM2/SM3 that stands in for an SM2 HSM in
//! signet's tests and quick start, the way SoftHSM stands in for an RSA/EC HSM.
//!
//! The cdylib `libsm2_softtoken.so` exports the PKCS#11 v2.40 C API (`C_GetFunctionList`).
//! [`ffi`] is the only place with raw pointers; [`token`] holds sessions, logins and
//! objects; [`store`] keeps tokens in SQLite; [`keywrap`] keeps secrets at rest under the
//! PINs; [`mechanisms`] does the cryptography; [`vendor`] has the SM2 vendor numbers.

pub mod ffi;
pub mod keywrap;
pub mod mechanisms;
pub mod objects;
pub mod store;
pub mod token;
pub mod vendor;
