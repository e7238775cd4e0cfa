//! `corral monit`: apps and workers in the terminal — status, restarts, CPU and memory over
//! time, the selected app's live output — with keys to reload, restart and scale.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Sparkline, Table};
use ratatui::{DefaultTerminal, Frame};

use super::conn;
use corral_proto::control::{AppView, Response, ScaleChange};

use crate::home::Home;
use crate::model::Request;
use crate::render;

/// Samples kept for the sparklines (one a second).
const HISTORY: usize = 120;
/// Output lines shown for the selected app.
const LOG_LINES: usize = 200;

pub fn run(home: Home) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = Monit::new(home).run(&mut terminal);
    ratatui::restore();
    result
}

struct History {
    cpu: VecDeque<u64>,
    memory: VecDeque<u64>,
}

struct Monit {
    home: Home,
    apps: Vec<AppView>,
    selected: usize,
    history: HashMap<String, History>,
    logs: Vec<String>,
    status: String,
    /// Answers to actions under way: a reload, restart or scale-up is answered when it
    /// is done, so it is asked off the drawing loop.
    answers: (
        std::sync::mpsc::Sender<String>,
        std::sync::mpsc::Receiver<String>,
    ),
}

impl Monit {
    fn new(home: Home) -> Self {
        Monit {
            home,
            apps: Vec::new(),
            selected: 0,
            history: HashMap::new(),
            logs: Vec::new(),
            status: String::new(),
            answers: std::sync::mpsc::channel(),
        }
    }

    fn run(&mut self, terminal: &mut DefaultTerminal) -> anyhow::Result<()> {
        let mut refreshed: Option<Instant> = None;
        loop {
            while let Ok(answer) = self.answers.1.try_recv() {
                self.status = answer;
            }
            if refreshed.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                self.refresh();
                refreshed = Some(Instant::now());
            }
            terminal.draw(|frame| self.draw(frame))?;
            if !event::poll(Duration::from_millis(200))? {
                continue;
            }
            let Event::Key(key) = event::read()? else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match key.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => {
                    self.selected = (self.selected + 1).min(self.apps.len().saturating_sub(1))
                }
                KeyCode::Char('r') => self.act(|name| Request::Reload { target: name }),
                KeyCode::Char('R') => self.act(|name| Request::Restart { target: name }),
                KeyCode::Char('+') => self.act(|name| Request::Scale {
                    name,
                    change: ScaleChange::Up(1),
                    force: false,
                }),
                KeyCode::Char('-') => self.act(|name| Request::Scale {
                    name,
                    change: ScaleChange::Down(1),
                    force: false,
                }),
                _ => {}
            }
            refreshed = None;
        }
    }

    fn selected_name(&self) -> Option<String> {
        self.apps.get(self.selected).map(|a| a.name.clone())
    }

    fn act(&mut self, request: impl FnOnce(String) -> Request) {
        let Some(name) = self.selected_name() else {
            return;
        };
        self.status = format!("{name}: asked, waiting for the outcome…");
        let (home, request, answers) = (self.home.clone(), request(name), self.answers.0.clone());
        std::thread::spawn(move || {
            let answer = match conn::request(&home, request, false).map(Response::outcome) {
                Ok(Ok(message)) => message,
                Ok(Err(message)) => format!("error: {message}"),
                Err(e) => format!("error: {e}"),
            };
            let _ = answers.send(answer);
        });
    }

    fn refresh(&mut self) {
        self.apps = match conn::request(&self.home, Request::List, false) {
            Ok(Response::Apps { apps }) => apps,
            Ok(other) => {
                self.status = format!("error: {}", super::refusal(other));
                Vec::new()
            }
            Err(_) => {
                self.status = "no daemon running (start an app with `corral start`)".into();
                Vec::new()
            }
        };
        self.selected = self.selected.min(self.apps.len().saturating_sub(1));
        for app in &self.apps {
            let h = self.history.entry(app.name.clone()).or_insert(History {
                cpu: VecDeque::new(),
                memory: VecDeque::new(),
            });
            let cpu: f64 = app.workers.iter().map(|w| w.cpu_percent).sum();
            let memory: u64 = app.workers.iter().map(|w| w.memory).sum();
            push(&mut h.cpu, cpu.round() as u64);
            push(&mut h.memory, memory / 1024);
        }
        self.logs = self
            .selected_name()
            .map_or_else(Vec::new, |name| self.tail(&name));
    }

    /// The last lines of every log file of `app` (wherever the daemon writes them),
    /// labelled by slot and stream.
    fn tail(&self, app: &str) -> Vec<String> {
        let Some(view) = self.apps.iter().find(|a| a.name == app) else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        for file in &view.logs {
            let label = crate::log_layout::label(app, file);
            let text = std::fs::read_to_string(&file.path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(LOG_LINES);
            lines.extend(all[from..].iter().map(|l| format!("[{label}] {l}")));
        }
        lines
    }

    fn draw(&self, frame: &mut Frame) {
        let rows: usize = self.apps.iter().map(|a| 1 + a.workers.len()).sum();
        let [table_area, graphs, logs, help] = Layout::vertical([
            Constraint::Length((rows as u16 + 3).min(frame.area().height / 2)),
            Constraint::Length(6),
            Constraint::Min(4),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        frame.render_widget(self.table(), table_area);
        self.draw_graphs(frame, graphs);
        let shown: Vec<&str> = {
            let height = logs.height.saturating_sub(2) as usize;
            let from = self.logs.len().saturating_sub(height);
            self.logs[from..].iter().map(String::as_str).collect()
        };
        let title = format!(" output: {} ", self.selected_name().unwrap_or_default());
        frame.render_widget(
            Paragraph::new(shown.join("\n"))
                .block(Block::default().borders(Borders::ALL).title(title)),
            logs,
        );
        let keys = "↑/↓ select  r reload  R restart  +/- scale  q quit";
        frame.render_widget(Paragraph::new(format!("{keys}   {}", self.status)), help);
    }

    fn table(&self) -> Table<'_> {
        let mut rows = Vec::new();
        for (i, app) in self.apps.iter().enumerate() {
            let style = if i == self.selected {
                Style::default().add_modifier(Modifier::REVERSED)
            } else {
                Style::default().add_modifier(Modifier::BOLD)
            };
            rows.push(Row::new(super::table::app_cells(app)).style(style));
            rows.extend(
                app.workers
                    .iter()
                    .map(|w| Row::new(super::table::worker_cells(w))),
            );
        }
        let header = Row::new(super::table::COLUMNS).style(Style::default().fg(Color::Cyan));
        let widths = [
            Constraint::Length(3),
            Constraint::Length(16),
            Constraint::Length(5),
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Min(10),
        ];
        Table::new(rows, widths)
            .header(header)
            .block(Block::default().borders(Borders::ALL).title(" corral "))
    }

    fn draw_graphs(&self, frame: &mut Frame, area: ratatui::layout::Rect) {
        let [cpu_area, memory_area] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(area);
        let empty = History {
            cpu: VecDeque::new(),
            memory: VecDeque::new(),
        };
        let h = self
            .selected_name()
            .and_then(|n| self.history.get(&n))
            .unwrap_or(&empty);
        let cpu: Vec<u64> = h.cpu.iter().copied().collect();
        let memory: Vec<u64> = h.memory.iter().copied().collect();
        let now_cpu = cpu.last().copied().unwrap_or(0);
        let now_memory = memory.last().copied().unwrap_or(0) * 1024;
        frame.render_widget(
            Sparkline::default()
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(format!(" cpu {now_cpu}% ")),
                )
                .data(&cpu)
                .style(Style::default().fg(Color::Green)),
            cpu_area,
        );
        frame.render_widget(
            Sparkline::default()
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(format!(" memory {} ", render::size(now_memory))),
                )
                .data(&memory)
                .style(Style::default().fg(Color::Yellow)),
            memory_area,
        );
    }
}

fn push(series: &mut VecDeque<u64>, value: u64) {
    if series.len() == HISTORY {
        series.pop_front();
    }
    series.push_back(value);
}
