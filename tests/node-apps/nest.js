// A NestJS app with shutdown hooks, in plain JavaScript (decorators applied by hand).
// Unmodified for corral.
require('reflect-metadata');
const { NestFactory } = require('@nestjs/core');
const { Controller, Get, Injectable, Module } = require('@nestjs/common');

class AppController {
  hello() {
    return `pid=${process.pid}\n`;
  }
}
Controller()(AppController);
Get()(AppController.prototype, 'hello', Object.getOwnPropertyDescriptor(AppController.prototype, 'hello'));

class Cleanup {
  onApplicationShutdown(signal) {
    console.log(`nest: shutdown hook ran (${signal})`);
  }
}
Injectable()(Cleanup);

class AppModule {}
Module({ controllers: [AppController], providers: [Cleanup] })(AppModule);

async function main() {
  const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] });
  app.enableShutdownHooks();
  await app.listen(process.env.PORT || 3000);
  console.log(`nest: pid ${process.pid} listening`);
}
main();
