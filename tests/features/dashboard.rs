//! The dashboard (`GET /` of the HTTP front end) in a real headless Chromium, as an operator
//! opens it: the token from the link's fragment, the providers, the plots and the queue
//! loaded by its script, a message held with its button (and seen held by the command
//! line), an API error shown in the message bar, the token form, and a screenshot whose
//! regions must not overlap, at 1280×800 and in a narrow window.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spooler_tests::{
    chromium_program, free_port, submit_numbered, wait_until, Chromium, Host, Page, Site, PROMPTLY,
};

/// A token of the length the host asks for.
const TOKEN: &str = "dashboard-0123456789abcdef";

/// How long the page may take to show something.
const PAGE_TIME: Duration = Duration::from_secs(20);

/// SMTP mail goes to a smart host that is down (a closed port): it waits, offline. FILE mail
/// is delivered at once by the directory transport.
const PROFILE: &str = r#"
[[transport]]
provider = "smtp"
name = "relay"
config = { host = "127.0.0.1", port = {closed}, tls = "none", helo = "spooler.test", timeout_secs = 5 }

[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files" }

[retry]
min_delay = "1h"
max_delay = "1h"

[http]
address = "127.0.0.1:{port}"
token_file = "{site}/token"
"#;

/// The host on a site with the stores and transports of [`PROFILE`]; its HTTP port.
fn start(site: &Site) -> (Host, u16) {
    let port = free_port();
    fs::write(site.path("token"), format!("{TOKEN}\n")).unwrap();
    let profile = PROFILE
        .replace("{port}", &port.to_string())
        .replace("{closed}", &free_port().to_string());
    (Host::start(&site.write_config(&profile), "host.log"), port)
}

fn message(from: &str, subject: &str) -> String {
    format!("From: {from}\r\nSubject: {subject}\r\n\r\nHello.\r\n")
}

/// The page's regions that must each be seen whole, side by side, never on top of another.
const REGIONS: [&str; 5] = ["providers", "depth-plot", "rate-plot", "events", "queue"];

/// Checks the regions' boxes at the page's current size: each has an area and lies within
/// the viewport's width, no two overlap, and the page does not scroll sideways. `panels`
/// checks the sections around them instead (a narrow window scrolls the table inside its
/// own).
fn check_layout(page: &mut Page<'_>, panels: bool) -> Value {
    let ids: Vec<String> = REGIONS
        .iter()
        .map(|id| {
            if panels {
                format!("{}-panel", id.split('-').next().unwrap())
            } else {
                (*id).to_owned()
            }
        })
        .collect();
    let boxes = page.evaluate(&format!(
        "({ids}).map(id => {{ const r = document.getElementById(id).getBoundingClientRect(); \
         return {{ id, left: r.left, top: r.top, right: r.right, bottom: r.bottom }}; }})",
        ids = json!(ids)
    ));
    let width = page.evaluate("window.innerWidth").as_f64().unwrap();
    let scroll = page
        .evaluate("document.documentElement.scrollWidth")
        .as_f64()
        .unwrap();
    assert!(
        scroll <= width,
        "the page scrolls sideways ({scroll} > {width})"
    );
    let boxes = boxes.as_array().expect("boxes").clone();
    let side = |b: &Value, name: &str| b[name].as_f64().unwrap();
    for b in &boxes {
        assert!(
            side(b, "right") > side(b, "left") && side(b, "bottom") > side(b, "top"),
            "{} has no area: {b}",
            b["id"]
        );
        assert!(
            side(b, "left") >= 0.0 && side(b, "right") <= width,
            "{} is not within the viewport's {width} px: {b}",
            b["id"]
        );
    }
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let apart = side(a, "right") <= side(b, "left")
                || side(b, "right") <= side(a, "left")
                || side(a, "bottom") <= side(b, "top")
                || side(b, "bottom") <= side(a, "top");
            assert!(apart, "{} and {} overlap: {a} {b}", a["id"], b["id"]);
        }
    }
    json!(boxes)
}

/// Checks that `png` is a PNG of `width` × `height` with something drawn on it (a page of
/// one colour compresses to a few hundred bytes), and writes it to `file`.
fn keep_screenshot(png: &[u8], width: u32, height: u32, file: &PathBuf) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!(
        (size(16), size(20)),
        (width, height),
        "the screenshot's size"
    );
    assert!(
        png.len() > 20_000,
        "the screenshot is {} bytes: a blank page?",
        png.len()
    );
    fs::write(file, png).expect("writing the screenshot");
    eprintln!("screenshot: {} ({} bytes)", file.display(), png.len());
}

/// `document.querySelector(SELECTOR)` as a JavaScript expression.
fn select(selector: &str) -> String {
    format!("document.querySelector({})", json!(selector))
}

#[test]
fn the_dashboard_shows_the_queue_and_holds_a_message_in_a_real_browser() {
    let Some(program) = chromium_program() else {
        return;
    };
    let began = Instant::now();
    let site = Site::with_providers(&["store-embedded", "transport-directory", "transport-smtp"]);
    let (host, port) = start(&site);
    for n in 1..=2 {
        host.submit(
            &["FILE:archive"],
            &message("alice@example.com", &format!("copy {n}")),
        );
    }
    let waiting = host.submit(
        &["carol@example.net"],
        &message("alice@example.com", "to the smart host that is down"),
    );
    let other = host.submit(
        &["dave@example.org"],
        &message("bob@example.com", "another one waiting"),
    );

    // 100 more waiting, so that the queue has two pages (100 a page): 102 in all.
    let (more, failure) = submit_numbered(&site.path("data/control.sock"), 0..100, |n| {
        format!("SMTP:user{n}@example.org")
    });
    assert!(failure.is_none(), "{failure:?}");
    let last = &more.last().unwrap().1;

    let mut browser = Chromium::start(&program);
    let mut page = browser.open(
        &format!("http://127.0.0.1:{port}/#token={TOKEN}"),
        1280,
        800,
    );
    page.wait_for(
        PAGE_TIME,
        "the first status and queue are loaded and the event stream is open",
        "document.body.dataset.ready === 'true' && document.getElementById('live').dataset.live === 'true'",
    );
    assert_eq!(
        page.evaluate("location.href"),
        json!(format!("http://127.0.0.1:{port}/")),
        "the token is taken out of the address bar"
    );
    assert_eq!(
        page.evaluate("sessionStorage.getItem('spooler-token')"),
        json!(TOKEN)
    );
    let row = format!("tr[data-id=\"{waiting}\"]");
    page.wait_for(
        PAGE_TIME,
        "the waiting message's row has a Hold button",
        &select(&format!("{row} [data-action=\"hold\"]")),
    );
    assert!(page
        .evaluate(&format!("{}.textContent", select(&row)))
        .as_str()
        .unwrap()
        .contains("carol@example.net"));
    // Paged: 100 on the first page (not the delivered ones), the last 2 on the next.
    let rows = "document.querySelectorAll('#queue-rows tr[data-id]').length";
    assert_eq!(page.evaluate(rows), json!(100));
    page.evaluate("document.getElementById('next-page').click()");
    page.wait_for(
        PAGE_TIME,
        "the next page shows the last two",
        &format!(
            "{rows} === 2 && {} && document.getElementById('next-page').disabled",
            select(&format!("tr[data-id=\"{last}\"]"))
        ),
    );
    assert_eq!(
        page.evaluate("document.getElementById('page-info').textContent"),
        json!("page 2 · 101–102")
    );
    page.evaluate("document.getElementById('prev-page').click()");
    page.wait_for(
        PAGE_TIME,
        "the previous page is the first again",
        &format!(
            "{rows} === 100 && {} && document.getElementById('prev-page').disabled",
            select(&row)
        ),
    );
    // The smart host's state arrives with the deferral's event (or the next refresh).
    page.wait_for(
        PAGE_TIME,
        "the providers show the relay offline and the files transport online",
        "document.querySelector('#providers li[data-name=\"relay\"][data-state=\"offline\"] .state.offline') \
         && document.querySelector('#providers li[data-name=\"files\"][data-state=\"online\"]')",
    );
    page.wait_for(
        PAGE_TIME,
        "the plots are drawn",
        "document.querySelector('#depth-plot text') && document.querySelector('#rate-plot text')",
    );

    // Hold, with the button; the command line sees it held, the page shows Release.
    page.evaluate(&format!(
        "{}.click()",
        select(&format!("{row} [data-action=\"hold\"]"))
    ));
    wait_until(PROMPTLY, "the command line shows the message held", || {
        host.show(&waiting)["held"] == true
    });
    page.wait_for(
        PAGE_TIME,
        "the row shows Release instead of Hold",
        &format!(
            "{} && !{}",
            select(&format!("{row} [data-action=\"release\"]")),
            select(&format!("{row} [data-action=\"hold\"]"))
        ),
    );
    assert_eq!(host.show(&other)["held"], false, "only that one");
    page.wait_for(
        PAGE_TIME,
        "the recent events show the hold",
        &format!(
            "[...document.querySelectorAll('#events li[data-kind=\"held\"]')].some(li => li.dataset.message === {})",
            json!(waiting)
        ),
    );

    // An error from the API is shown, not swallowed: a held message is not flushed (409).
    page.evaluate(&format!(
        "{}.click()",
        select(&format!("{row} [data-action=\"flush\"]"))
    ));
    page.wait_for(
        PAGE_TIME,
        "the message bar shows why the flush was refused",
        "[...document.querySelectorAll('#messages .problem')].some(p => /held/.test(p.textContent))",
    );

    let boxes = check_layout(&mut page, false);
    eprintln!("regions at 1280×800: {boxes}");
    let png = page.screenshot();
    let target = spooler_tests::build_folder()
        .parent()
        .expect("target/ holds the build folder")
        .join("dashboard.png");
    keep_screenshot(&png, 1280, 800, &target);

    // A narrow window: the sections stack, nothing overlaps or leaves the window.
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 420, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
    );
    page.wait_for(
        PAGE_TIME,
        "the page is laid out for 420 px and the plots drawn again at their new width",
        "window.innerWidth === 420 && ['depth-plot', 'rate-plot'].every(id => { \
         const plot = document.getElementById(id); \
         return plot.dataset.width === String(Math.round(plot.getBoundingClientRect().width)); })",
    );
    check_layout(&mut page, true);
    let narrow = page.screenshot();
    keep_screenshot(
        &narrow,
        420,
        900,
        &target.with_file_name("dashboard-narrow.png"),
    );
    // The refused flush's 409 is the console's only error.
    let problems: Vec<String> = page
        .problems()
        .into_iter()
        .filter(|p| !p.contains("status of 409"))
        .collect();
    assert!(problems.is_empty(), "the page had errors: {problems:#?}");
    drop(page);

    // Without the token (a new tab has its own session): the form asks for it, a wrong
    // one is refused, the right one loads the page.
    let mut page = browser.open(&format!("http://127.0.0.1:{port}/"), 1280, 800);
    page.wait_for(
        PAGE_TIME,
        "the page asks for the token",
        "!document.getElementById('token-form').hidden",
    );
    let enter = |page: &mut Page<'_>, token: &str| {
        page.evaluate(&format!(
            "document.getElementById('token-input').value = {}; \
             document.getElementById('token-form').requestSubmit()",
            json!(token)
        ));
    };
    enter(&mut page, "not-the-token-at-all");
    page.wait_for(
        PAGE_TIME,
        "a wrong token is refused",
        "!document.getElementById('token-form').hidden \
         && /refused/.test(document.getElementById('token-note').textContent)",
    );
    enter(&mut page, TOKEN);
    page.wait_for(
        PAGE_TIME,
        "the right token loads the page",
        &format!(
            "document.body.dataset.ready === 'true' && {}",
            select(&format!("{row} [data-action=\"release\"]"))
        ),
    );
    // The 401s of the wrong token are the console's only errors.
    let problems: Vec<String> = page
        .problems()
        .into_iter()
        .filter(|p| !p.contains("status of 401"))
        .collect();
    assert!(problems.is_empty(), "the page had errors: {problems:#?}");
    eprintln!("the dashboard test took {:?}", began.elapsed());
}

/// The event stream, read by the page's script: a message submitted with the command line
/// shows in the recent events and in the queue before the page's own refresh (every 10 s)
/// would have brought it, and a hold made elsewhere turns its button into Release.
#[test]
fn the_page_follows_the_event_stream() {
    let Some(program) = chromium_program() else {
        return;
    };
    let site = Site::with_providers(&["store-embedded", "transport-directory", "transport-smtp"]);
    let (host, port) = start(&site);
    let mut browser = Chromium::start(&program);
    let mut page = browser.open(
        &format!("http://127.0.0.1:{port}/#token={TOKEN}"),
        1280,
        800,
    );
    page.wait_for(
        PAGE_TIME,
        "the page is loaded and listening",
        "document.body.dataset.ready === 'true' && document.getElementById('live').dataset.live === 'true'",
    );
    // Past the first refresh, so that the next one is 10 s away.
    std::thread::sleep(Duration::from_millis(500));
    let id = host.submit(&["erin@example.net"], &message("alice@example.com", "live"));
    let row = format!("tr[data-id=\"{id}\"]");
    page.wait_for(
        Duration::from_secs(5),
        "the event brings the new message into the queue and the recent events",
        &format!(
            "{} && [...document.querySelectorAll('#events li[data-kind=\"submitted\"]')].some(li => li.dataset.message === {})",
            select(&format!("{row} [data-action=\"hold\"]")),
            json!(id)
        ),
    );
    assert_eq!(host.command(&["hold", &id]).code, Some(0));
    page.wait_for(
        Duration::from_secs(5),
        "the hold made with the command line shows",
        &select(&format!("{row} [data-action=\"release\"]")),
    );
}

/// Makes `docs/dashboard.png`, the README's picture: the page open through a few minutes of
/// mail, some delivered and some waiting, so that the plots and the events have something
/// to show. Not run by default (it takes three minutes):
/// `cargo test -p spooler-tests -- --ignored dashboard::picture`.
#[test]
#[ignore = "makes docs/dashboard.png; takes three minutes"]
fn picture_for_the_readme() {
    let Some(program) = chromium_program() else {
        return;
    };
    let site = Site::with_providers(&["store-embedded", "transport-directory", "transport-smtp"]);
    let (host, port) = start(&site);
    let senders = [
        "alice@example.com",
        "billing@example.com",
        "noreply@example.com",
    ];
    let subjects = [
        "Invoice 2026-1042",
        "Your order has shipped",
        "Weekly report",
        "Password reset",
        "Meeting notes, Thursday",
        "Quarterly figures",
    ];
    let mut browser = Chromium::start(&program);
    let mut page = browser.open(
        &format!("http://127.0.0.1:{port}/#token={TOKEN}"),
        1280,
        800,
    );
    page.wait_for(
        PAGE_TIME,
        "the page is loaded and follows the events",
        "document.body.dataset.ready === 'true' && document.getElementById('live').dataset.live === 'true'",
    );
    let mut n = 0;
    let until = Instant::now() + Duration::from_secs(170);
    while Instant::now() < until {
        // Every 10 s: a few delivered, and now and then one more for the smart host.
        let sender = senders[n % 3];
        for _ in 0..(n % 4 + 1) {
            host.submit(
                &["-f", sender, "FILE:archive"],
                &message(sender, subjects[n % subjects.len()]),
            );
        }
        if n % 3 == 0 {
            let sender = senders[(n / 3) % 3];
            host.submit(
                &["-f", sender, &format!("user{n}@example.net")],
                &message(sender, subjects[(n / 3 + 2) % subjects.len()]),
            );
        }
        n += 1;
        std::thread::sleep(Duration::from_secs(10));
    }
    // One held, as an operator would have it.
    let first = page.evaluate("document.querySelector('#queue-rows tr[data-id]').dataset.id");
    let first = first.as_str().expect("a queued message").to_owned();
    let row = format!("tr[data-id=\"{first}\"]");
    page.evaluate(&format!(
        "{}.click()",
        select(&format!("{row} [data-action=\"hold\"]"))
    ));
    page.wait_for(
        PAGE_TIME,
        "the row shows it held",
        &select(&format!("{row} [data-action=\"release\"]")),
    );
    std::thread::sleep(Duration::from_secs(1));
    check_layout(&mut page, false);
    let png = page.screenshot();
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
    keep_screenshot(&png, 1280, 800, &docs);
    assert!(png.len() < 200_000, "keep the README's picture small");
}
