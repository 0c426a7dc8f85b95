//! A small tmpfs over a folder, for the tests of a full disk: mounting needs root, so
//! without it the test is skipped (and fails under `.ci/run`, which runs as root).

use std::process::Command;

/// A small tmpfs mounted over a folder for the life of a test (root only).
pub struct SmallDisk {
    folder: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `8M`) over `folder`; `None` (skipped) without root.
    pub fn mount(folder: &std::path::Path, size: &str) -> Option<SmallDisk> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
                "the full-disk test needs root to mount a tmpfs"
            );
            eprintln!("SKIPPED: mounting a small tmpfs needs root (CI runs as root)");
            return None;
        }
        std::fs::create_dir_all(folder).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(folder)
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "mounting a tmpfs at {}",
            folder.display()
        );
        Some(SmallDisk {
            folder: folder.to_owned(),
        })
    }

    /// Fills it with a file until no byte more fits.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.folder.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
        while file.write_all(&[0]).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        Command::new("umount")
            .arg("-l")
            .arg(&self.folder)
            .status()
            .ok();
    }
}
