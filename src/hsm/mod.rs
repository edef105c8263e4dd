//! PKCS#11 HSM access: one context per module, a held login, a pool of sessions, cached key
//! handles, signing mechanisms, and recovery when the device goes away.
