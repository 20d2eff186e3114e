// PM2 process file for the release binary, as the original ran under PM2:
//   pm2 start deploy/ecosystem.config.js    pm2 status websocket-server
//   pm2 logs websocket-server               pm2 reload websocket-server
//   pm2 stop websocket-server
// Build first: scripts/build.sh (or scripts/run.sh once).
const path = require("path");
const root = path.resolve(__dirname, "..");

module.exports = {
  apps: [
    {
      name: "websocket-server",
      script: path.join(root, "target", "release", "server"),
      interpreter: "none", // a native binary, not a Node script
      cwd: root,
      exec_mode: "fork",
      autorestart: true,
      // PM2 stops with SIGINT, which drains like SIGTERM (close sockets
      // with 1012, clean Redis) within SHUTDOWN_GRACE_SECS; SIGKILL only
      // after that and a margin.
      kill_timeout: 13000,
      // Values from the environment of `pm2 start` win, so one file serves
      // several instances: PORT=4101 RELAY_PORT=8081 ADMIN_PORT=9101 pm2 start ... --name chat-2
      env: {
        PORT: process.env.PORT || "4100",
        RELAY_PORT: process.env.RELAY_PORT || "8080",
        // /metrics, on 127.0.0.1 only (ADMIN_BIND): one port per instance.
        ADMIN_PORT: process.env.ADMIN_PORT || "9100",
        ...(process.env.REDIS_URL ? { REDIS_URL: process.env.REDIS_URL } : {}),
        // The origins browsers reach the chat at (DNS rebinding check).
        ...(process.env.PUBLIC_ORIGINS ? { PUBLIC_ORIGINS: process.env.PUBLIC_ORIGINS } : {}),
        // Without REDIS_URL the rooms are kept here (one file); give each
        // instance its own: DATA_DIR=data-2 ... --name chat-2.
        DATA_DIR: process.env.DATA_DIR || path.join(root, "data"),
        SHUTDOWN_GRACE_SECS: "10",
        LEPTOS_SITE_ROOT: path.join(root, "target", "site"),
        RUST_LOG: process.env.RUST_LOG || "info",
      },
    },
  ],
};
