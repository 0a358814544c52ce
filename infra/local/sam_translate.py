"""Translates template.yaml the way CloudFormation would, offline, with the Managed Instances
switch off and on, and checks what each deploy would get.

Run with the SAM CLI venv's python (infra/local/lib.sh, lint_template): AWS::LanguageExtensions
is expanded by the SAM CLI's local copy of it (which resolves the switch's !If from the
parameter values, as CloudFormation does before the SAM transform), then samtranslator turns
the result into plain CloudFormation. No AWS credentials and no network: managed policies are
only named by ARN in the template, so the policy map is empty.

Usage: python sam_translate.py TEMPLATE
"""

import sys

from samcli.lib.translate.sam_template_validator import SamTemplateValidator
from samcli.yamlhelper import yaml_parse

# Values for the parameters without a default; none of them changes which resources exist.
REQUIRED = {
    "MskClusterArn": "arn:aws:kafka:us-east-1:123456789012:cluster/devconnect/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab-2",
    "SubnetIds": "subnet-0aaa,subnet-0bbb",
    "SecurityGroupIds": "sg-0ccc",
    "UnsubscribeSecret": "x" * 32,
    "SesFromAddress": "no-reply@example.com",
}
CAPACITY_PROVIDER = "arn:aws:lambda:us-east-1:123456789012:capacity-provider:devconnect-http"


class NoManagedPolicies:
    """The template names managed policies by ARN; nothing to look up."""

    def load(self):
        return {}


def translate(text, overrides):
    validator = SamTemplateValidator(
        yaml_parse(text),
        NoManagedPolicies(),
        region="us-east-1",
        parameter_overrides={**REQUIRED, **overrides},
        language_extensions_enabled=True,
    )
    resources = yaml_parse(validator.get_translated_template_if_valid())["Resources"]
    return {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}


def http_functions(text):
    """Logical ids of the functions with an HttpApi event."""
    resources = yaml_parse(text)["Resources"]
    return {
        k
        for k, r in resources.items()
        if r.get("Type") == "AWS::Serverless::Function"
        and any(e.get("Type") == "HttpApi" for e in (r.get("Properties", {}).get("Events") or {}).values())
    }


def check(text):
    problems = []
    http = http_functions(text)
    off = translate(text, {})
    for name, props in sorted(off.items()):
        if "CapacityProviderConfig" in props or "VpcConfig" not in props:
            problems.append(f"switch off: {name} must run in the VPC on standard Lambda")
    on = translate(text, {"ManagedInstancesCapacityProviderArn": CAPACITY_PROVIDER})
    for name, props in sorted(on.items()):
        config = (props.get("CapacityProviderConfig") or {}).get("LambdaManagedInstancesCapacityProviderConfig", {})
        if name in http:
            if config.get("CapacityProviderArn") != CAPACITY_PROVIDER:
                problems.append(f"switch on: HTTP function {name} is not on the capacity provider")
            if "VpcConfig" in props or int(props.get("MemorySize", 0)) < 2048 or props.get("PublishToLatestPublished") is not True:
                problems.append(f"switch on: {name} needs no VpcConfig, MemorySize >= 2048, PublishToLatestPublished")
        elif config or "VpcConfig" not in props:
            problems.append(f"switch on: {name} (not HTTP) must stay in the VPC on standard Lambda")
    if set(on) != set(off):
        problems.append("the switch changes which functions exist")
    return http, problems


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    http, problems = check(text)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"translated with the Managed Instances switch off and on: {len(http)} HTTP functions move, the rest stay")


if __name__ == "__main__":
    main()
