//! `scale`: one `ScaleTo` control, the whole change or, refused, none of it.

use crate::daemon::server::*;

impl Daemon {
    /// One `ScaleTo` control: the whole change or, refused, none of it.
    pub(in crate::daemon::server) fn scale(
        &mut self,
        name: &str,
        change: ScaleChange,
        force: bool,
    ) -> Response {
        let cpus = corral_core::spec::usable_cpus();
        self.each(name, |app| {
            let current = app.instances;
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
                    reason: e.to_string(),
                }
            })?;
            send(app, Control::ScaleTo(target))?;
            app.instances = target;
            app.spec.instances = target;
            app.start.scaled = Some(target);
            Ok(format!("{}: {current} → {target} workers", app.name))
        })
    }
}
