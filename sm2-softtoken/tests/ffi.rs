//! The C boundary itself, called in-process through the rlib: null pointers, length
//! queries, short buffers and per-attribute errors get PKCS#11's answers.

use std::ptr::null_mut;

use cryptoki_sys::*;
use sm2_softtoken::ffi::*;
use sm2_softtoken::vendor::CKM_SM3;

fn attr<T>(t: CK_ATTRIBUTE_TYPE, v: &mut T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v as *mut T as *mut _,
        ulValueLen: size_of::<T>() as CK_ULONG,
    }
}

#[test]
fn null_pointers_length_queries_and_short_buffers_get_the_pkcs11_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    // SAFETY: this test binary has one test; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("SIGNET_SM2_SOFTTOKEN_DIR", dir.path()) };
    let (so, user) = (b"so-pin-1234", b"user-1234");
    // SAFETY: the calls below pass valid pointers or deliberate nulls, as PKCS#11 allows.
    unsafe {
        assert_eq!(C_GetFunctionList(null_mut()), CKR_ARGUMENTS_BAD);
        assert_eq!(
            C_GetSlotList(0, null_mut(), null_mut()),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(C_Initialize(null_mut()), CKR_OK);
        assert_eq!(C_Initialize(null_mut()), CKR_CRYPTOKI_ALREADY_INITIALIZED);

        assert_eq!(C_GetSlotList(0, null_mut(), null_mut()), CKR_ARGUMENTS_BAD);
        let mut n: CK_ULONG = 0;
        assert_eq!(C_GetSlotList(0, null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 1, "the free slot");
        let mut slot: CK_SLOT_ID = 99;
        let mut short: CK_ULONG = 0;
        assert_eq!(
            C_GetSlotList(0, &mut slot, &mut short),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(short, 1);

        let mut label = [b' '; 32];
        assert_eq!(
            C_InitToken(0, null_mut(), 5, label.as_mut_ptr()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            C_InitToken(0, so.as_ptr() as *mut _, so.len() as CK_ULONG, null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            C_InitToken(0, so.as_ptr() as *mut _, 2, label.as_mut_ptr()),
            CKR_PIN_LEN_RANGE
        );
        assert_eq!(
            C_InitToken(
                0,
                so.as_ptr() as *mut _,
                so.len() as CK_ULONG,
                label.as_mut_ptr()
            ),
            CKR_OK
        );

        let rw = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        assert_eq!(
            C_OpenSession(0, rw, null_mut(), None, null_mut()),
            CKR_ARGUMENTS_BAD
        );
        let mut h: CK_SESSION_HANDLE = 0;
        assert_eq!(
            C_OpenSession(0, CKF_RW_SESSION, null_mut(), None, &mut h),
            CKR_SESSION_PARALLEL_NOT_SUPPORTED
        );
        assert_eq!(
            C_OpenSession(7, rw, null_mut(), None, &mut h),
            CKR_SLOT_ID_INVALID
        );
        assert_eq!(C_OpenSession(0, rw, null_mut(), None, &mut h), CKR_OK);
        assert_eq!(C_Login(h, CKU_SO, null_mut(), 4), CKR_ARGUMENTS_BAD);
        assert_eq!(
            C_Login(h, CKU_USER, user.as_ptr() as *mut _, user.len() as CK_ULONG),
            CKR_USER_PIN_NOT_INITIALIZED
        );
        assert_eq!(
            C_Login(h, CKU_SO, so.as_ptr() as *mut _, so.len() as CK_ULONG),
            CKR_OK
        );
        assert_eq!(
            C_InitPIN(h, user.as_ptr() as *mut _, user.len() as CK_ULONG),
            CKR_OK
        );
        assert_eq!(C_Logout(h), CKR_OK);
        assert_eq!(C_Logout(h), CKR_USER_NOT_LOGGED_IN);

        let (mut class, mut value) = (CKO_DATA, *b"hello");
        let mut template = [attr(CKA_CLASS, &mut class), attr(CKA_VALUE, &mut value)];
        let mut object: CK_OBJECT_HANDLE = 0;
        assert_eq!(
            C_CreateObject(h, template.as_mut_ptr(), 2, null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            C_CreateObject(h, null_mut(), 2, &mut object),
            CKR_ARGUMENTS_BAD
        );
        let mut bad = [CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: null_mut(),
            ulValueLen: 3,
        }];
        assert_eq!(
            C_CreateObject(h, bad.as_mut_ptr(), 1, &mut object),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            C_CreateObject(h, template.as_mut_ptr(), 2, &mut object),
            CKR_OK
        );

        // Length query, exact buffer, short buffer, unknown attribute.
        let mut query = [CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: null_mut(),
            ulValueLen: 0,
        }];
        assert_eq!(
            C_GetAttributeValue(h, object, query.as_mut_ptr(), 1),
            CKR_OK
        );
        assert_eq!(query[0].ulValueLen, 5);
        let mut two = [0u8; 2];
        let mut mixed = [
            CK_ATTRIBUTE {
                type_: CKA_VALUE,
                pValue: two.as_mut_ptr() as *mut _,
                ulValueLen: 2,
            },
            CK_ATTRIBUTE {
                type_: CKA_MODULUS,
                pValue: null_mut(),
                ulValueLen: 0,
            },
            attr(CKA_CLASS, &mut class),
        ];
        let rv = C_GetAttributeValue(h, object, mixed.as_mut_ptr(), 3);
        assert!(
            rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_TYPE_INVALID,
            "{rv:#x}"
        );
        assert_eq!(mixed[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(mixed[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(
            (mixed[2].ulValueLen, class),
            (size_of::<CK_ULONG>() as CK_ULONG, CKO_DATA)
        );

        let mut sig_len: CK_ULONG = 64;
        assert_eq!(
            C_Sign(h, null_mut(), 0, null_mut(), &mut sig_len),
            CKR_OPERATION_NOT_INITIALIZED
        );

        // SM3 of "abc" (GM/T 0004 example 1), with a length query first.
        let mut mech = CK_MECHANISM {
            mechanism: CKM_SM3,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        assert_eq!(C_DigestInit(h, &mut mech), CKR_OK);
        let mut len: CK_ULONG = 0;
        assert_eq!(
            C_Digest(h, b"abc".as_ptr() as *mut _, 3, null_mut(), &mut len),
            CKR_OK
        );
        assert_eq!(len, 32);
        let mut digest = [0u8; 32];
        assert_eq!(
            C_Digest(
                h,
                b"abc".as_ptr() as *mut _,
                3,
                digest.as_mut_ptr(),
                &mut len
            ),
            CKR_OK
        );
        assert_eq!(
            hex::encode(digest),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            C_Digest(h, null_mut(), 0, digest.as_mut_ptr(), &mut len),
            CKR_OPERATION_NOT_INITIALIZED
        );

        assert_eq!(
            C_UnwrapKey(h, &mut mech, 0, null_mut(), 0, null_mut(), 0, null_mut()),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        let mut random = [0u8; 16];
        assert_eq!(C_GenerateRandom(h, random.as_mut_ptr(), 16), CKR_OK);
        assert_ne!(random, [0u8; 16]);
        assert_eq!(C_GenerateRandom(h, null_mut(), 16), CKR_ARGUMENTS_BAD);

        let mut list: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(C_GetFunctionList(&mut list), CKR_OK);
        let list = &*list;
        assert_eq!((list.version.major, list.version.minor), (2, 40));
        let copy = list.C_CopyObject.expect("entry");
        assert_eq!(
            copy(h, 0, null_mut(), 0, null_mut()),
            CKR_FUNCTION_NOT_SUPPORTED
        );

        assert_eq!(C_CloseSession(h), CKR_OK);
        assert_eq!(C_CloseSession(h), CKR_SESSION_HANDLE_INVALID);
        assert_eq!(C_Finalize(&mut 1u8 as *mut u8 as *mut _), CKR_ARGUMENTS_BAD);
        assert_eq!(C_Finalize(null_mut()), CKR_OK);
        assert_eq!(C_Finalize(null_mut()), CKR_CRYPTOKI_NOT_INITIALIZED);
    }
}
