# A Rack app for the puma recipe (see puma.rb beside it).
require "puma/plugin/corral_drain"
use CorralDrain::CloseWhenDraining

run ->(env) { [200, { "content-type" => "text/plain" }, ["pid=#{Process.pid}\n"]] }
