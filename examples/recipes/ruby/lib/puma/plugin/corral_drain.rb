# A puma plugin: on SIGTERM, answer every request with `Connection: close` for a moment
# (kept-alive clients reconnect, to a worker that is not leaving), then stop puma as
# usual (stop accepting, finish in-flight requests, exit).
require "puma/plugin"

module CorralDrain
  GRACE = 1.0 # seconds of `Connection: close` answers before puma's own stop

  @draining = false
  class << self
    attr_accessor :draining
  end

  # Rack middleware that adds the header while draining (`use`d in config.ru).
  class CloseWhenDraining
    def initialize(app)
      @app = app
    end

    def call(env)
      status, headers, body = @app.call(env)
      headers = headers.merge("connection" => "close") if CorralDrain.draining
      [status, headers, body]
    end
  end
end

Puma::Plugin.create do
  def start(launcher)
    # puma installs its own TERM handler after plugins start; once it has booted, this
    # one takes its place.
    launcher.events.on_booted do
      Signal.trap("TERM") do
        CorralDrain.draining = true
        Thread.new do
          sleep CorralDrain::GRACE
          launcher.stop
        end
      end
    end
  end
end
