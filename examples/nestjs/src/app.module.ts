import { IcapModule } from '@icapkit/nestjs';
import { type DynamicModule, Module } from '@nestjs/common';
import { ExpressUploadController, FastifyUploadController, StatusController } from './upload.controller.js';

export interface AppSettings {
  platform: 'express' | 'fastify';
  icapUrl: string;
  serviceUri: string;
  failOpen: boolean;
}

@Module({})
// biome-ignore lint/complexity/noStaticOnlyClass: Nest modules are classes (forRoot/register are static)
export class AppModule {
  static register(settings: AppSettings): DynamicModule {
    return {
      module: AppModule,
      imports: [
        // Or IcapModule.forRootAsync({ imports: [ConfigModule], inject: [ConfigService], useFactory: ... }).
        IcapModule.forRoot({
          name: 'uploads',
          poolGroup: settings.icapUrl, // icap://host:1344, or a list of servers, or pools by priority
          serviceUri: settings.serviceUri, // /avscan
          bufferSize: '50mb', // larger uploads: 413
          failAction: settings.failOpen ? 'fail-open' : 'fail-closed', // ICAP server down: 503, or pass unscanned
          connection: { connectTimeout: 2000 },
          // One line per request: action, method, path, threat.
          onLog: (log) =>
            console.log(
              `icap ${log.action} ${log.http_method} ${log.uri_path} ${log.request_logs.at(-1)?.threat_id ?? ''}`.trim(),
            ),
        }),
      ],
      controllers: [
        StatusController,
        settings.platform === 'fastify' ? FastifyUploadController : ExpressUploadController,
      ],
    };
  }
}
