//! `input`: text written to the standard input of an app's workers, or of one worker.

use corral_core::supervisor::input_request;

use crate::daemon::server::*;

/// How long an engine may take to answer; it answers at once unless its loop is stuck.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

impl Daemon {
    pub(in crate::daemon::server) fn input(
        &mut self,
        target: &str,
        text: String,
        reply: oneshot::Sender<Response>,
    ) {
        let answer = match self.input_to(target, text) {
            Ok(answer) => answer,
            Err(refusal) => {
                let _ = reply.send(refusal.into());
                return;
            }
        };
        tokio::spawn(async move {
            let response = match tokio::time::timeout(ANSWER_WITHIN, answer).await {
                Ok(response) => response,
                Err(_) => Response::error("the app's engine did not answer within 5 s; try again"),
            };
            let _ = reply.send(response);
        });
    }

    /// Sends the text to the app's engine; what the engine will answer.
    fn input_to(
        &mut self,
        target: &str,
        text: String,
    ) -> Result<impl std::future::Future<Output = Response>, Refusal> {
        let (name, slot) = match target.split_once(':') {
            Some((name, slot)) => match slot.parse::<usize>() {
                Ok(slot) => (name, Some(slot)),
                Err(_) => return Err(Refusal::BadWorker(target.to_owned())),
            },
            None => (target, None),
        };
        let name = self.one_target(name, "input")?;
        let app = self.apps.get(&name).expect("target exists");
        if !app.spec.stdin_pipe {
            return Err(Refusal::NoStdin(name));
        }
        let (command, answer) = input_request(slot, text.into_bytes());
        send(app, command)?;
        Ok(async move {
            match answer.get().await {
                Ok(n) => Response::ok(match slot {
                    Some(slot) => format!("written to {name}:{slot}"),
                    None => format!("written to {n} workers of {name}"),
                }),
                Err(e) => Refusal::Input { app: name, why: e }.into(),
            }
        })
    }
}
