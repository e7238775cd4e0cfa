export default {
  apps: [{ name: 'esm', script: './app.js', env: { PORT: __PORT__, APP_NAME: 'esm' } }],
};
