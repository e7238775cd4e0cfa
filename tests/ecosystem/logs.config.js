// Log and lifecycle keys: log_type json, log_date_format, stop_exit_codes, namespace.
module.exports = {
  apps: [
    {
      name: 'jsonlog',
      script: './app.js',
      namespace: 'shop',
      log_type: 'json',
      env: { PORT: __PORT__, APP_NAME: 'jsonlog' },
    },
    {
      name: 'stamped',
      script: './worker.py',
      interpreter_args: '-u',
      namespace: 'shop',
      log_date_format: 'YYYY-MM-DD HH:mm Z',
    },
    { name: 'once', script: './exit3.sh', stop_exit_codes: [3], namespace: 'batch' },
  ],
};
