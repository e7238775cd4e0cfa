# puma under corral: `corral run --listen 127.0.0.1:9292 -i 2 -- puma -C puma.rb`
#
# puma takes corral's socket by systemd's LISTEN_FDS protocol, but only for a bind that
# names the same address, so bind exactly corral's address (corral sets PORT to it).
# The corral_drain plugin (lib/puma/plugin/corral_drain.rb) makes the drain keep-alive
# safe: puma alone closes idle keep-alive connections at once on SIGTERM.
$LOAD_PATH.unshift File.expand_path("lib", __dir__)

bind "tcp://#{ENV.fetch('CORRAL_BIND_HOST', '127.0.0.1')}:#{ENV.fetch('PORT', '9292')}"
rackup File.expand_path("config.ru", __dir__)
threads 4, 4
plugin :corral_drain
