//! `atoll attach NODE`: a live view of a node's processes, in the spirit of Erlang's
//! observer and `top`. The processes come from the live-attach RPC, asked through any
//! node's HTTP service (`/api/nodes/NODE/processes`).

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};

use crate::error::Error;
use crate::grains::GrainView;
use crate::http::{ApiError, ProcessView};

/// What the process list is sorted by (largest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Messages waiting.
    Mailbox,
    /// Messages handled so far.
    Handled,
    /// Time since spawn.
    Uptime,
}

impl SortBy {
    fn label(self) -> &'static str {
        match self {
            SortBy::Mailbox => "mailbox",
            SortBy::Handled => "handled",
            SortBy::Uptime => "uptime",
        }
    }
}

/// Fetches `node`'s processes through the HTTP service at `http`, sorted by `sort`.
pub fn fetch(http: &str, node: &str, sort: SortBy) -> Result<Vec<ProcessView>, Error> {
    let (code, body) = crate::status::get(http, &format!("/api/nodes/{node}/processes"))?;
    if code != 200 {
        let reason = serde_json::from_str::<ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("HTTP {code}"));
        return Err(Error::BadAnswer {
            addr: http.to_string(),
            reason,
        });
    }
    let mut list: Vec<ProcessView> = serde_json::from_str(&body).map_err(|e| Error::BadAnswer {
        addr: http.to_string(),
        reason: format!("not a process list: {e}"),
    })?;
    sort_processes(&mut list, sort);
    Ok(list)
}

/// Fetches the grain activations on `node` through the HTTP service at `http`: `None` when
/// the node asked hosts no grains.
pub fn fetch_grains(http: &str, node: &str) -> Result<Option<Vec<GrainView>>, Error> {
    let (code, body) = crate::status::get(http, &format!("/api/nodes/{node}/grains"))?;
    match code {
        200 => serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| Error::BadAnswer {
                addr: http.to_string(),
                reason: format!("not a grain list: {e}"),
            }),
        404 => Ok(None),
        _ => Err(Error::BadAnswer {
            addr: http.to_string(),
            reason: format!("HTTP {code}"),
        }),
    }
}

/// The grains table `atoll attach --once` prints after the processes.
pub fn render_grains(node: &str, grains: Option<&[GrainView]>) -> String {
    let Some(grains) = grains else {
        return String::new();
    };
    let rows: Vec<Vec<String>> = grains.iter().map(|g| grain_cells(g).to_vec()).collect();
    format!(
        "\nnode {node}: {} grains\n{}",
        grains.len(),
        crate::status::aligned("", &GRAIN_HEADER, &rows)
    )
}

const GRAIN_HEADER: [&str; 5] = ["TYPE", "KEY", "EPOCH", "DURABILITY", "PID"];

fn grain_cells(g: &GrainView) -> [String; 5] {
    [
        g.grain_type.clone(),
        g.key.clone(),
        g.epoch.to_string(),
        g.durability.clone(),
        g.pid.clone(),
    ]
}

/// Sorts largest first by `sort`, then by pid.
pub fn sort_processes(list: &mut [ProcessView], sort: SortBy) {
    list.sort_by(|a, b| {
        let key = |p: &ProcessView| match sort {
            SortBy::Mailbox => p.mailbox_len,
            SortBy::Handled => p.messages_handled,
            SortBy::Uptime => p.uptime_ms,
        };
        key(b).cmp(&key(a)).then_with(|| a.pid.cmp(&b.pid))
    });
}

const HEADER: [&str; 7] = [
    "PID", "NAME", "TYPE", "MAILBOX", "HANDLED", "UPTIME", "STATUS",
];

fn cells(p: &ProcessView) -> [String; 7] {
    [
        p.pid.clone(),
        p.name.clone().unwrap_or_default(),
        short_type(&p.actor_type),
        p.mailbox_len.to_string(),
        p.messages_handled.to_string(),
        uptime(p.uptime_ms),
        p.status.clone(),
    ]
}

/// `a::b::Thing` → `Thing` (keeps generic arguments readable too).
fn short_type(t: &str) -> String {
    let head = t.split('<').next().unwrap_or(t);
    let short = head.rsplit("::").next().unwrap_or(head);
    format!("{short}{}", &t[head.len()..])
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The table `atoll attach --once` prints.
pub fn render_once(node: &str, list: &[ProcessView], sort: SortBy) -> String {
    let rows: Vec<Vec<String>> = list.iter().map(|p| cells(p).to_vec()).collect();
    format!(
        "node {node}: {} processes, sorted by {}\n{}",
        list.len(),
        sort.label(),
        crate::status::aligned("", &HEADER, &rows)
    )
}

/// The interactive view: refreshes every `every`; `m`, `h`, `u` sort, `r` refreshes, `q`
/// or Esc quits.
pub fn run_live(http: &str, node: &str, mut sort: SortBy, every: Duration) -> Result<(), Error> {
    // Fails before the terminal is taken over, so a wrong node is a plain error.
    let mut list = fetch(http, node, sort)?;
    let mut grains = fetch_grains(http, node)?;
    let mut problem: Option<String> = None;
    let mut terminal = ratatui::init();
    let mut fetched = Instant::now();
    let result = loop {
        let draw = terminal.draw(|frame| {
            // The grains on the node below its processes, when it hosts any.
            let grain_rows = grains.as_ref().map_or(0, |g| g.len().max(1) as u16 + 3);
            let [top, body, grain_area, bottom] = Layout::vertical([
                Constraint::Length(1),
                Constraint::Min(1),
                Constraint::Length(grain_rows.min(14)),
                Constraint::Length(1),
            ])
            .areas(frame.area());
            frame.render_widget(
                Paragraph::new(format!(
                    "atoll attach {node} via {http}: {} processes, sorted by {}{}",
                    list.len(),
                    sort.label(),
                    problem
                        .as_deref()
                        .map_or(String::new(), |p| format!("  [{p}]"))
                )),
                top,
            );
            let rows = list.iter().map(|p| Row::new(cells(p)));
            let table = Table::new(
                rows,
                [
                    Constraint::Length(26),
                    Constraint::Length(16),
                    Constraint::Length(18),
                    Constraint::Length(8),
                    Constraint::Length(10),
                    Constraint::Length(8),
                    Constraint::Length(9),
                ],
            )
            .header(Row::new(HEADER).style(Style::new().add_modifier(Modifier::BOLD)))
            .block(Block::bordered());
            frame.render_widget(table, body);
            if let Some(grains) = &grains {
                let rows = grains.iter().map(|g| Row::new(grain_cells(g)));
                let table = Table::new(
                    rows,
                    [
                        Constraint::Length(16),
                        Constraint::Length(24),
                        Constraint::Length(8),
                        Constraint::Length(15),
                        Constraint::Length(26),
                    ],
                )
                .header(Row::new(GRAIN_HEADER).style(Style::new().add_modifier(Modifier::BOLD)))
                .block(Block::bordered().title(format!(" {} grains ", grains.len())));
                frame.render_widget(table, grain_area);
            }
            frame.render_widget(
                Line::from("m mailbox · h handled · u uptime · r refresh · q quit"),
                bottom,
            );
        });
        if let Err(source) = draw {
            break Err(Error::Runtime {
                what: "terminal",
                source,
            });
        }
        let wait = every.saturating_sub(fetched.elapsed());
        let key = match event::poll(wait) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => Some(k.code),
                _ => None,
            },
            Ok(false) => None,
            Err(source) => {
                break Err(Error::Runtime {
                    what: "terminal",
                    source,
                });
            }
        };
        match key {
            Some(KeyCode::Char('q') | KeyCode::Esc) => break Ok(()),
            Some(KeyCode::Char('m')) => sort = SortBy::Mailbox,
            Some(KeyCode::Char('h')) => sort = SortBy::Handled,
            Some(KeyCode::Char('u')) => sort = SortBy::Uptime,
            Some(KeyCode::Char('r')) | None => {}
            Some(_) => continue,
        }
        sort_processes(&mut list, sort);
        if key == Some(KeyCode::Char('r')) || fetched.elapsed() >= every {
            match fetch(http, node, sort) {
                Ok(fresh) => {
                    list = fresh;
                    problem = None;
                }
                Err(e) => problem = Some(e.to_string()),
            }
            match fetch_grains(http, node) {
                Ok(fresh) => grains = fresh,
                Err(e) => problem = Some(e.to_string()),
            }
            fetched = Instant::now();
        }
    };
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: &str, mailbox: u64, handled: u64, uptime_ms: u64) -> ProcessView {
        ProcessView {
            pid: pid.into(),
            name: None,
            actor_type: "atoll_cluster::chat::Room".into(),
            mailbox_len: mailbox,
            messages_handled: handled,
            uptime_ms,
            status: "waiting".into(),
            links: 0,
            monitors: 0,
            trap_exit: false,
        }
    }

    #[test]
    fn sorts_largest_first_by_the_chosen_column() {
        let mut list = vec![p("a", 1, 30, 5), p("b", 9, 10, 50), p("c", 5, 20, 500)];
        let order = |l: &[ProcessView]| l.iter().map(|p| p.pid.clone()).collect::<String>();
        sort_processes(&mut list, SortBy::Mailbox);
        assert_eq!(order(&list), "bca");
        sort_processes(&mut list, SortBy::Handled);
        assert_eq!(order(&list), "acb");
        sort_processes(&mut list, SortBy::Uptime);
        assert_eq!(order(&list), "cba");
    }

    #[test]
    fn types_and_uptimes_are_shown_short() {
        assert_eq!(short_type("a::b::Room"), "Room");
        assert_eq!(short_type("a::Wrap<b::C>"), "Wrap<b::C>");
        assert_eq!(uptime(1_500), "1.5s");
        assert_eq!(uptime(61_000), "1m01s");
        assert_eq!(uptime(7_260_000), "2h01m");
    }
}
