//! `Store::default_root` resolution. A binary of its own because it changes
//! the environment, which no other thread may read meanwhile.

use kiln_store::Store;

#[test]
fn default_root_follows_environment() {
    // SAFETY: no other thread of this test binary reads the environment here.
    unsafe {
        std::env::set_var("KILN_HOME", "/x/kiln-home");
    }
    assert_eq!(
        Store::default_root().unwrap(),
        std::path::PathBuf::from("/x/kiln-home")
    );
    unsafe {
        std::env::set_var("KILN_HOME", "");
        std::env::set_var("XDG_CACHE_HOME", "/x/cache");
    }
    assert_eq!(
        Store::default_root().unwrap(),
        std::path::PathBuf::from("/x/cache/kiln")
    );
    unsafe {
        std::env::remove_var("XDG_CACHE_HOME");
        std::env::set_var("HOME", "/x/home");
    }
    assert_eq!(
        Store::default_root().unwrap(),
        std::path::PathBuf::from("/x/home/.cache/kiln")
    );
}
