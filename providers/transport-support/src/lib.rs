//! What the bundled transports share: trust for TLS connections (the built-in public roots,
//! or exactly the CA certificates of `ca_file`, and a refused server certificate told in
//! words an operator can act on), and passwords read from a file.

pub mod tls;

/// The password from the profile (`password`) or from the first line of `password_file`
/// (its line end dropped), never both; `None` if neither is set.
pub fn password(
    password: Option<String>,
    password_file: Option<&str>,
) -> Result<Option<String>, String> {
    match (password, password_file) {
        (Some(_), Some(_)) => Err("set `password` or `password_file`, not both".into()),
        (password, None) => Ok(password),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("password_file {file}: cannot read it: {e}"))?;
            let password = text.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(format!("password_file {file}: the file is empty"));
            }
            Ok(Some(password.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_from_the_profile_or_a_file_but_not_both() {
        let folder = std::env::temp_dir().join(format!("password-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join("password");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        let file = file.to_str().unwrap();
        assert_eq!(
            password(None, Some(file)).unwrap().as_deref(),
            Some("s3cret"),
            "the line end is dropped"
        );
        assert_eq!(
            password(Some("inline".into()), None).unwrap().as_deref(),
            Some("inline")
        );
        assert_eq!(password(None, None).unwrap(), None);
        assert!(password(Some("x".into()), Some(file))
            .unwrap_err()
            .contains("not both"));
        std::fs::write(folder.join("empty"), "\n").unwrap();
        let empty = folder.join("empty");
        assert!(password(None, Some(empty.to_str().unwrap()))
            .unwrap_err()
            .contains("is empty"));
        assert!(password(None, Some("/nonexistent/password"))
            .unwrap_err()
            .contains("password_file /nonexistent/password: cannot read it"));
        std::fs::remove_dir_all(folder).ok();
    }
}
