// The seed tutorials' ecosystem file: cluster mode, no `listen` key.
module.exports = {
  apps: [
    {
      name: 'web',
      script: './app.js',
      instances: 2,
      exec_mode: 'cluster',
      env: { PORT: __PORT__, APP_NAME: 'web' },
      env_production: { MODE: 'production' },
    },
  ],
};
