# A puma plugin: on SIGTERM, stop accepting at once (new connections wait in corral's
# queue for the other workers), answer every request with `Connection: close` for a
# moment (kept-alive clients reconnect, to a worker that is not leaving), then stop puma
# as usual (finish in-flight requests, exit).
require "puma/plugin"
require "socket"

module CorralDrain
  GRACE = 1.0 # seconds of `Connection: close` answers before puma's own stop

  @draining = false
  class << self
    attr_accessor :draining

    # puma's own stop closes every connection it accepted whose request has not been
    # read yet, so a worker that accepts until then drops those (seen in CI: 1 broken
    # pipe in 35,576 `Connection: close` requests). Closing the listener here would
    # break puma's accept loop, and shutdown(2) would stop the socket for every worker;
    # so each listener's descriptor is pointed at an idle socket of its own instead,
    # which drops only this process's reference to corral's socket.
    def stop_accepting(ios)
      ios.each do |io|
        idle = TCPServer.new("127.0.0.1", 0)
        io.reopen(idle)
        idle.close
      end
    end
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
          CorralDrain.stop_accepting(launcher.binder.ios)
          sleep CorralDrain::GRACE
          launcher.stop
        end
      end
    end
  end
end
