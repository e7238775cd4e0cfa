//! Replies that wait for work on several apps (a stop of `all`, a reload whose config
//! files are read off the state task): answered once every part is settled.

use std::collections::HashMap;

use tokio::sync::oneshot;

use corral_proto::control::Response;

use super::refusal::Refusal;

struct Join {
    reply: oneshot::Sender<Response>,
    left: usize,
    messages: Vec<String>,
    errors: Vec<String>,
    /// The answer when every part went well, instead of the parts' messages.
    summary: Option<String>,
}

/// Open joins by id.
#[derive(Default)]
pub struct Joins {
    next: u64,
    open: HashMap<u64, Join>,
}

impl Joins {
    /// A join of `parts` parts; with none, `reply` is answered at once.
    pub fn open(
        &mut self,
        reply: oneshot::Sender<Response>,
        parts: usize,
        summary: Option<String>,
    ) -> u64 {
        let id = self.next;
        self.next += 1;
        let join = Join {
            reply,
            left: parts,
            messages: Vec::new(),
            errors: Vec::new(),
            summary,
        };
        if parts == 0 {
            answer(join);
        } else {
            self.open.insert(id, join);
        }
        id
    }

    /// One part of join `id` is done.
    pub fn settle(&mut self, id: u64, result: Result<String, Refusal>) {
        self.record(id, &Heard::from(result));
    }

    /// Settles every join of `ids` with one result (worded once: a refusal may hold an
    /// error that can't be cloned).
    pub fn settle_all(&mut self, ids: Vec<u64>, result: Result<String, Refusal>) {
        let heard = Heard::from(result);
        for id in ids {
            self.record(id, &heard);
        }
    }

    fn record(&mut self, id: u64, heard: &Heard) {
        let Some(join) = self.open.get_mut(&id) else {
            return;
        };
        match heard {
            Heard::Done(m) if !m.is_empty() => join.messages.push(m.clone()),
            Heard::Done(_) => {}
            Heard::Refused(e) => join.errors.push(e.clone()),
        }
        join.left -= 1;
        if join.left == 0 {
            answer(self.open.remove(&id).expect("present above"));
        }
    }
}

/// What a join heard from one app, worded.
enum Heard {
    Done(String),
    Refused(String),
}

impl From<Result<String, Refusal>> for Heard {
    fn from(result: Result<String, Refusal>) -> Heard {
        match result {
            Ok(message) => Heard::Done(message),
            Err(refusal) => Heard::Refused(refusal.to_string()),
        }
    }
}

fn answer(join: Join) {
    let response = if !join.errors.is_empty() {
        Response::error(join.errors.join("\n"))
    } else {
        Response::ok(join.summary.unwrap_or_else(|| join.messages.join("\n")))
    };
    let _ = join.reply.send(response);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_once_every_part_is_settled_errors_first() {
        let mut joins = Joins::default();
        let (tx, mut rx) = oneshot::channel();
        let id = joins.open(tx, 2, None);
        joins.settle(id, Ok("a reloading".into()));
        assert!(rx.try_recv().is_err(), "one part still open");
        joins.settle(id, Err(Refusal::Busy("b".into())));
        match rx.try_recv().unwrap() {
            Response::Error { message, .. } => assert_eq!(message, "b is busy; try again"),
            other => panic!("{other:?}"),
        }
        let (tx, mut rx) = oneshot::channel();
        joins.open(tx, 0, Some("stopped nothing".into()));
        assert!(matches!(rx.try_recv().unwrap(), Response::Ok { .. }));
    }
}
