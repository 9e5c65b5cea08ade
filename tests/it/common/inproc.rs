//! The in-process PKCS#11 context of this test process, on the token directory that
//! `SOFTHSM2_CONF` names (scripts/test points it at a fresh directory per run). One context per
//! process, so every in-process test takes the lock for its whole duration; that also keeps the
//! token directory quiet while a server started by the same test opens it.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

/// The shared context and token.
pub struct InProc {
    pub ctx: Pkcs11,
    /// Label of this process's token (unique, so a reused directory does not matter).
    pub label: String,
    pub slot: Slot,
    pub softhsm_conf: PathBuf,
    pub user_pin_file: PathBuf,
    user_pin: SecretString,
    _dir: tempfile::TempDir,
}

static INPROC: OnceLock<Mutex<InProc>> = OnceLock::new();

/// Takes the in-process token for the duration of a test.
pub fn lock() -> MutexGuard<'static, InProc> {
    INPROC
        .get_or_init(|| Mutex::new(InProc::init()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

impl InProc {
    fn init() -> Self {
        let softhsm_conf = PathBuf::from(std::env::var("SOFTHSM2_CONF").expect(
            "SOFTHSM2_CONF must name a private softhsm2.conf for in-process tests: run ./scripts/test \
             or export SOFTHSM2_CONF=$(softhsm/setup /tmp/some-dir)",
        ));
        assert!(
            !softhsm_conf.starts_with("/etc"),
            "refusing to run in-process tests on the system token directory"
        );
        let ctx = Pkcs11::new(super::module()).expect("load the PKCS#11 module");
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        let dir = tempfile::tempdir().expect("tempdir");
        let user_pin = format!("user-{}", uuid::Uuid::new_v4().simple());
        let so_pin = SecretString::from(format!("so-{}", uuid::Uuid::new_v4().simple()));
        let user_pin_file = dir.path().join("user.pin");
        std::fs::write(&user_pin_file, format!("{user_pin}\n")).expect("write pin");
        // The server refuses a PIN file that group or others may read (issue 12, item 14).
        std::fs::set_permissions(
            &user_pin_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod 600 the pin");
        let free = ctx
            .get_slots_with_token()
            .expect("slots")
            .into_iter()
            .find(|s| {
                !ctx.get_token_info(*s)
                    .expect("token info")
                    .token_initialized()
            })
            .expect("SoftHSM always offers a free slot");
        let label = format!("it-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        ctx.init_token(free, &so_pin, &label).expect("C_InitToken");
        // SoftHSM renumbers slots after C_InitToken: find the token again by label.
        let slot = ctx
            .get_slots_with_initialized_token()
            .expect("slots")
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .expect("token info")
                    .label()
                    .trim_end()
                    == label
            })
            .expect("the new token");
        let user_pin = SecretString::from(user_pin);
        {
            let session = ctx.open_rw_session(slot).expect("session");
            session
                .login(UserType::So, Some(&so_pin))
                .expect("SO login");
            session.init_pin(&user_pin).expect("C_InitPIN");
            session.logout().expect("logout");
        }
        Self {
            ctx,
            label,
            slot,
            softhsm_conf,
            user_pin_file,
            user_pin,
            _dir: dir,
        }
    }

    /// A fresh read-write session, logged in as the user.
    pub fn session(&self) -> Session {
        let session = self.ctx.open_rw_session(self.slot).expect("session");
        match session.login(UserType::User, Some(&self.user_pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => panic!("user login: {e}"),
        }
        session
    }
}
