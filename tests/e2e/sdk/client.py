"""A client program written against the generated Python SDK (sdk/python).

The e2e test (tests/e2e/sdk.rs) runs it against a test mesh with sdk/python
on PYTHONPATH:

    BLAZE_TOKEN=<api token> python client.py <edge host:port> <workspace id>

Over native gRPC through the edge it lists the caller's organisations,
creates an app, lists the apps and makes one call without a token; it prints
one JSON object with the results. Any failed call exits non-zero.
"""

import json
import os
import sys

import grpc
from google.protobuf import json_format

from blaze.controlplane.v1 import apps_pb2, apps_pb2_grpc, tenancy_pb2, tenancy_pb2_grpc


def main() -> None:
    target, workspace_id = sys.argv[1], sys.argv[2]
    auth = [("authorization", f"Bearer {os.environ['BLAZE_TOKEN']}")]
    with grpc.insecure_channel(target) as channel:
        organizations = tenancy_pb2_grpc.OrganizationServiceStub(channel)
        apps = apps_pb2_grpc.AppServiceStub(channel)
        orgs = organizations.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(), metadata=auth, timeout=60)
        org_id = orgs.data[0].id
        created = apps.CreateApp(
            apps_pb2.CreateAppRequest(org_id=org_id, workspace_id=workspace_id, name="From the SDK (Python)"),
            metadata=auth,
            timeout=60,
        )
        listed = apps.ListApps(apps_pb2.ListAppsRequest(org_id=org_id, workspace_id=workspace_id), metadata=auth, timeout=60)
        try:
            organizations.ListOrganizations(tenancy_pb2.ListOrganizationsRequest(), timeout=60)
            refused = "OK"
        except grpc.RpcError as e:
            refused = e.code().name
    print(
        json.dumps(
            {
                "organizations": json_format.MessageToDict(orgs),
                "created": json_format.MessageToDict(created),
                "apps": json_format.MessageToDict(listed),
                "withoutToken": refused,
            }
        )
    )


if __name__ == "__main__":
    main()
