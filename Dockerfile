# corral in a container, running an unmodified Node app (examples/node/server.js).
#   docker build -t myapp . && docker run -p 3000:3000 -p 9100:9100 --cpus 2 myapp
# See docs/containers.md for the choices.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p corral

FROM node:24-bookworm-slim
COPY --from=build /src/target/release/corral /usr/local/bin/corral
WORKDIR /app
COPY examples/node/package.json examples/node/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY examples/node/ ./
USER node
EXPOSE 3000 9100
# corral is PID 1: it reaps zombies, forwards signals, and on SIGTERM drains every
# worker (SIGKILL after --kill-timeout). `-i max` counts the CPUs the cgroup allows;
# WORKERS=N overrides it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["corral", "run", "--listen", "3000", "-i", "max", "--kill-timeout", "20s", "--metrics", "0.0.0.0:9100", "--"]
CMD ["node", "server.js"]
