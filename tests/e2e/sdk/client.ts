// A client program written against the generated TypeScript SDK, as a user
// of `@blaze/sdk` would write it. The e2e test (tests/e2e/sdk.rs) compiles it
// with tsc and runs it against a test mesh:
//
//   BLAZE_TOKEN=<api token> node out/client.js <edge url> <workspace id>
//
// For each transport the edge speaks (gRPC-web over HTTP/1.1, as browsers
// do, and native gRPC over h2c) it lists the caller's organisations,
// creates an app, lists the apps and makes one call without a token. It
// prints one JSON object with the results; any failed call exits non-zero.
import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import {
  AppService,
  CreateAppResponseSchema,
  ListAppsResponseSchema,
} from "@blaze/sdk/gen/blaze/controlplane/v1/apps_pb.js";
import { ListOrganizationsResponseSchema, OrganizationService } from "@blaze/sdk/gen/blaze/controlplane/v1/tenancy_pb.js";

const [baseUrl, workspaceId] = process.argv.slice(2);
const token = process.env.BLAZE_TOKEN;
if (!baseUrl || !workspaceId || !token) {
  console.error("usage: BLAZE_TOKEN=<api token> node client.js <edge url> <workspace id>");
  process.exit(2);
}

const bearer: Interceptor = (next) => (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

async function exercise(transport: (interceptors: Interceptor[]) => Transport, name: string) {
  const organizations = createClient(OrganizationService, transport([bearer]));
  const apps = createClient(AppService, transport([bearer]));
  const orgs = await organizations.listOrganizations({});
  const orgId = orgs.data[0]?.id;
  if (!orgId) {
    throw new Error("ListOrganizations returned no organisation");
  }
  const created = await apps.createApp({ orgId, workspaceId, name: `From the SDK (${name})` });
  const listed = await apps.listApps({ orgId, workspaceId });
  // The same call without credentials must fail with the gRPC status, not
  // with a transport error.
  const anonymous = createClient(OrganizationService, transport([]));
  const refused = await anonymous.listOrganizations({}).then(
    () => ({ code: "OK", message: "" }),
    (e: unknown) => {
      const err = ConnectError.from(e);
      return { code: Code[err.code], message: err.message };
    },
  );
  return {
    organizations: toJson(ListOrganizationsResponseSchema, orgs),
    created: toJson(CreateAppResponseSchema, created),
    apps: toJson(ListAppsResponseSchema, listed),
    withoutToken: refused.code,
    withoutTokenMessage: refused.message,
  };
}

const results = {
  grpcWeb: await exercise((interceptors) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors }), "gRPC-web"),
  grpc: await exercise((interceptors) => createGrpcTransport({ baseUrl, interceptors }), "gRPC"),
};
console.log(JSON.stringify(results));
