import type { IcapProfile } from '@icapkit/core';
import type {
  DynamicModule,
  InjectionToken,
  ModuleMetadata,
  OptionalFactoryDependency,
  Provider,
} from '@nestjs/common';
import {
  APP_GUARD,
  ApplicationConfig,
  DiscoveryModule,
  DiscoveryService,
  HttpAdapterHost,
  MetadataScanner,
} from '@nestjs/core';
import { ICAP_MODULE_OPTIONS } from './constants.js';
import { IcapRouteGuard } from './guard.js';
import type { Versioning } from './routes.js';
import {
  type HandlerRef,
  type HttpAdapterLike,
  type IcapModuleConfig,
  type IcapModuleOptions,
  IcapService,
} from './service.js';

export interface IcapModuleAsyncOptions extends Pick<ModuleMetadata, 'imports'> {
  /** Resolves to `{ profile, options? }` (e.g. from ConfigService). */
  useFactory: (...args: never[]) => IcapModuleConfig | Promise<IcapModuleConfig>;
  inject?: Array<InjectionToken | OptionalFactoryDependency>;
}

/**
 * Every upload to the application is scanned by the ICAP server before Nest's body parsers,
 * multer (FileInterceptor) or @fastify/multipart read it, on the Express and the Fastify
 * platforms:
 *
 *   @Module({ imports: [IcapModule.forRoot({ name: 'uploads', poolGroup: 'icap://127.0.0.1:1344', serviceUri: '/avscan' })] })
 *   export class AppModule {}
 *
 * Global: import it once, in the root module. `@SkipIcap()` and `@IcapOptions({...})` on
 * controllers and handlers; `@IcapResult()` (or `req.icap`) for the outcome; `IcapService`
 * for the engine. The engines close with the application (`app.close()`).
 */
// biome-ignore lint/complexity/noStaticOnlyClass: Nest modules are classes (forRoot/register are static)
export class IcapModule {
  static forRoot(profile: IcapProfile, options: IcapModuleOptions = {}): DynamicModule {
    return IcapModule.#module([{ provide: ICAP_MODULE_OPTIONS, useValue: { profile, options } }], []);
  }

  static forRootAsync(async: IcapModuleAsyncOptions): DynamicModule {
    return IcapModule.#module(
      [
        {
          provide: ICAP_MODULE_OPTIONS,
          useFactory: async (...args: never[]) => {
            const config = await async.useFactory(...args);
            if (config === null || typeof config !== 'object' || typeof config.profile !== 'object')
              throw new TypeError(
                'IcapModule.forRootAsync: useFactory must resolve to { profile, options? }',
              );
            return config;
          },
          inject: async.inject ?? [],
        },
      ],
      async.imports ?? [],
    );
  }

  static #module(
    optionProviders: Provider[],
    imports: NonNullable<ModuleMetadata['imports']>,
  ): DynamicModule {
    return {
      module: IcapModule,
      global: true,
      imports: [DiscoveryModule, ...imports],
      providers: [
        ...optionProviders,
        {
          provide: IcapService,
          useFactory: createService,
          inject: [ICAP_MODULE_OPTIONS, HttpAdapterHost, DiscoveryService, ApplicationConfig],
        },
        { provide: APP_GUARD, useFactory: (s: IcapService) => new IcapRouteGuard(s), inject: [IcapService] },
      ],
      exports: [IcapService],
    };
  }
}

async function createService(
  config: IcapModuleConfig,
  host: HttpAdapterHost,
  discovery: DiscoveryService,
  app: ApplicationConfig,
): Promise<IcapService> {
  const scanner = new MetadataScanner();
  const handlers: HandlerRef[] = [];
  for (const wrapper of discovery.getControllers()) {
    const controller = wrapper.metatype as unknown;
    if (typeof controller !== 'function') continue;
    const proto = (controller as { prototype: Record<string, unknown> }).prototype;
    for (const name of scanner.getAllMethodNames(proto)) {
      const handler = proto[name];
      if (typeof handler === 'function') handlers.push({ controller, handler });
    }
  }
  // Read when requests come: main.ts enables versioning after the module is created.
  const service = new IcapService(config, handlers, () => app.getVersioning() as Versioning | undefined);
  const adapter = host.httpAdapter as HttpAdapterLike | undefined;
  if (adapter !== undefined && adapter !== null) {
    // NestFactory.create(): the adapter exists while the providers are created.
    await service.install(adapter);
  } else {
    // Test.createTestingModule(...).createNestApplication(): the adapter comes later, before
    // app.init() (which loads a Fastify plugin registered here before adding the routes).
    const sub = host.init$.subscribe(() => {
      const later = host.httpAdapter as HttpAdapterLike | undefined;
      if (later !== undefined && later !== null) service.installLater(later);
      queueMicrotask(() => sub?.unsubscribe());
    });
  }
  return service;
}
