//! `scale`: one `ScaleTo` control, the whole change or, refused, none of it.

use crate::daemon::server::*;

impl Daemon {
    /// One `ScaleTo` control: the whole change or, refused, none of it. A scale-up is
    /// answered once the added workers are up, or with the reason one is not.
    pub(in crate::daemon::server) fn scale(
        &mut self,
        name: &str,
        change: ScaleChange,
        force: bool,
        reply: oneshot::Sender<Response>,
    ) {
        let mut added = Vec::new();
        let response = self.scale_now(name, change, force, &mut added);
        let message = match &response {
            Response::Ok { message } if !added.is_empty() => message.clone(),
            _ => {
                let _ = reply.send(response);
                return;
            }
        };
        let join = self.joins.open(reply, added.len(), Some(message));
        for (app, more) in added {
            self.coming_up
                .entry(app)
                .or_default()
                .wait(more, vec![join]);
        }
    }

    /// Sends each target its `ScaleTo`; `added` gets the apps that grow, by how many.
    fn scale_now(
        &mut self,
        name: &str,
        change: ScaleChange,
        force: bool,
        added: &mut Vec<(String, usize)>,
    ) -> Response {
        let cpus = corral_core::spec::usable_cpus();
        self.each(name, |app| {
            let current = app.board.instances();
            let target = change.target(current).filter(|&n| n >= 1).ok_or_else(|| {
                let how = match change {
                    ScaleChange::To(n) => format!("to {n}"),
                    _ => format!("by {change} from {current}"),
                };
                Refusal::ScaleBelowOne {
                    app: app.name.clone(),
                    how,
                }
            })?;
            corral_core::spec::check_worker_count(target, cpus, force).map_err(|e| {
                Refusal::ScaleCount {
                    app: app.name.clone(),
                    reason: crate::model::options::worker_count_refused(&e),
                }
            })?;
            send(app, Control::ScaleTo(target))?;
            if target > current {
                added.push((app.name.clone(), target - current));
            }
            app.board.scale_to(target);
            app.spec.instances = target;
            app.start.scaled = Some(target);
            Ok(format!("{}: {current} → {target} workers", app.name))
        })
    }
}
