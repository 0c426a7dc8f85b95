//! Delivery status notification requests (RFC 3461): MAIL's RET and ENVID, RCPT's NOTIFY
//! and ORCPT, checked, mapped onto the report options `submit -N` has (a delivery report
//! if any recipient asks for SUCCESS; no non-delivery report if every recipient's NOTIFY
//! leaves FAILURE out), and kept with the message as envelope properties (`dsn.ret`,
//! `dsn.envid`, and per recipient `dsn.notify`, valued `address value`; ORCPT goes where
//! reports read it, [`ORIGINAL_RECIPIENT`]).

use provider_abi::{Property, ReportRequest};

use crate::base::properties::{ENVELOPE_ID, NOTIFY, ORIGINAL_RECIPIENT, RETURN};

/// The DSN requests of one transaction.
#[derive(Debug, Default)]
pub struct Dsn {
    ret: Option<String>,
    envid: Option<String>,
    /// Per recipient: its address, its NOTIFY (if given) and its ORCPT (if given).
    recipients: Vec<(String, Option<Notify>, Option<String>)>,
}

/// A NOTIFY parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    success: bool,
    failure: bool,
    delay: bool,
}

impl Notify {
    fn text(self) -> String {
        let mut words = Vec::new();
        for (wanted, word) in [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ] {
            if wanted {
                words.push(word);
            }
        }
        if words.is_empty() {
            "NEVER".into()
        } else {
            words.join(",")
        }
    }
}

/// Reads `NOTIFY=NEVER` or `NOTIFY=` a list of SUCCESS, FAILURE and DELAY.
pub fn notify(value: Option<&str>) -> Result<Notify, String> {
    let bad = || "NOTIFY takes NEVER or a list of SUCCESS, FAILURE and DELAY".to_owned();
    let value = value.ok_or_else(bad)?.to_ascii_uppercase();
    if value == "NEVER" {
        return Ok(Notify::default());
    }
    let mut notify = Notify::default();
    for word in value.split(',') {
        match word {
            "SUCCESS" => notify.success = true,
            "FAILURE" => notify.failure = true,
            "DELAY" => notify.delay = true,
            _ => return Err(bad()),
        }
    }
    Ok(notify)
}

/// Reads `ORCPT=addr-type;xtext` (e.g. `rfc822;bob@example.com`).
pub fn original_recipient(value: Option<&str>) -> Result<String, String> {
    let bad = || "ORCPT takes address-type;address, e.g. rfc822;bob@example.com".to_owned();
    let value = value.ok_or_else(bad)?;
    match value.split_once(';') {
        Some((kind, address)) if !kind.is_empty() && is_xtext(address) && value.len() <= 500 => {
            Ok(value.to_owned())
        }
        _ => Err(bad()),
    }
}

/// RFC 3461 xtext: printable ASCII but `+` and `=`, which only `+XX` may write.
fn is_xtext(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'=')
}

impl Dsn {
    /// Takes MAIL's RET or ENVID.
    pub fn mail_parameter(&mut self, keyword: &str, value: Option<&str>) -> Result<(), String> {
        match keyword {
            "RET" => match value.map(str::to_ascii_uppercase) {
                Some(ret) if ret == "FULL" || ret == "HDRS" => {
                    self.ret = Some(ret);
                    Ok(())
                }
                _ => Err("RET takes FULL or HDRS".into()),
            },
            _ => match value {
                Some(envid) if is_xtext(envid) && envid.len() <= 100 => {
                    self.envid = Some(envid.to_owned());
                    Ok(())
                }
                _ => Err("ENVID takes up to 100 characters of xtext".into()),
            },
        }
    }

    /// Takes one recipient's NOTIFY and ORCPT.
    pub fn recipient(&mut self, address: &str, notify: Option<Notify>, original: Option<String>) {
        self.recipients.push((address.to_owned(), notify, original));
    }

    /// The reports the message asks for.
    pub fn reports(&self) -> ReportRequest {
        let delivery = self
            .recipients
            .iter()
            .any(|(_, notify, _)| notify.is_some_and(|n| n.success));
        let non_delivery = self.recipients.is_empty()
            || self
                .recipients
                .iter()
                .any(|(_, notify, _)| notify.is_none_or(|n| n.failure));
        ReportRequest {
            delivery,
            non_delivery,
        }
    }

    /// The requests as envelope properties, for reports and for the next hop.
    pub fn properties(&self) -> Vec<Property> {
        let property = |name: &str, value: String| Property {
            name: name.into(),
            value: value.into(),
        };
        let mut properties = Vec::new();
        if let Some(ret) = &self.ret {
            properties.push(property(RETURN, ret.clone()));
        }
        if let Some(envid) = &self.envid {
            properties.push(property(ENVELOPE_ID, envid.clone()));
        }
        for (address, notify, original) in &self.recipients {
            if let Some(notify) = notify {
                properties.push(property(NOTIFY, format!("{address} {}", notify.text())));
            }
            if let Some(original) = original {
                properties.push(property(
                    &format!("{ORIGINAL_RECIPIENT}{address}"),
                    original.clone(),
                ));
            }
        }
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_maps_onto_the_report_options() {
        let mut dsn = Dsn::default();
        dsn.recipient(
            "SMTP:a@x",
            Some(notify(Some("success,delay")).unwrap()),
            None,
        );
        dsn.recipient("SMTP:b@x", Some(notify(Some("NEVER")).unwrap()), None);
        assert_eq!(
            dsn.reports(),
            ReportRequest {
                delivery: true,
                non_delivery: false
            }
        );
        dsn.recipient("SMTP:c@x", None, None);
        assert!(dsn.reports().non_delivery, "no NOTIFY means FAILURE,DELAY");
        assert_eq!(Dsn::default().reports(), ReportRequest::default());
    }

    #[test]
    fn parameters_are_checked_and_kept() {
        assert!(notify(Some("NEVER,SUCCESS")).is_err());
        assert!(notify(None).is_err());
        assert!(original_recipient(Some("rfc822;bob@example.com")).is_ok());
        assert!(original_recipient(Some("bob@example.com")).is_err());
        let mut dsn = Dsn::default();
        dsn.mail_parameter("RET", Some("hdrs")).unwrap();
        dsn.mail_parameter("ENVID", Some("QQ314159")).unwrap();
        assert!(dsn.mail_parameter("RET", Some("ALL")).is_err());
        assert!(dsn.mail_parameter("ENVID", Some("a=b")).is_err());
        dsn.recipient(
            "SMTP:b@x",
            Some(notify(Some("FAILURE")).unwrap()),
            Some("rfc822;b@x".into()),
        );
        let properties: Vec<(String, String)> = dsn
            .properties()
            .into_iter()
            .map(|p| (p.name.into_string(), p.value.into_string()))
            .collect();
        assert_eq!(
            properties,
            [
                ("dsn.ret".into(), "HDRS".into()),
                ("dsn.envid".into(), "QQ314159".into()),
                ("dsn.notify".into(), "SMTP:b@x FAILURE".into()),
                (
                    "spooler.original-recipient.SMTP:b@x".into(),
                    "rfc822;b@x".into()
                ),
            ]
        );
    }
}
