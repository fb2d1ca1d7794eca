"""Sync a customer account to a partner CRM: credentials by reference, payloads kept
private at rest and on screen.

    look up the account -> push it to the CRM (with the CRM key, revealed only there)

The CRM key is a `keel.Secret`: the run's input, the journal, traces and `keel show`
hold only its reference (`{"$secret": "env:KEEL_EXAMPLE_CRM_KEY"}`); the tool reads
the value from the environment when it runs, on whichever worker runs it. Fields
named like secrets (the account's `api_token`) are masked in everything Keel shows;
with `KEEL_ENCRYPTION_KEY` set the whole journal is encrypted at rest.

    export KEEL_EXAMPLE_CRM_KEY=crm_live_4f0c8d2e9a7b
    keel run examples/account_sync.py:sync --id sync-1 \\
        --input '{"account_id": "acct_1001", "crm_key": {"$secret": "env:KEEL_EXAMPLE_CRM_KEY"}}'
    keel show sync-1          # the key as a reference, the account's api_token [REDACTED]
"""

import hashlib

from pydantic import BaseModel

import keel

app = keel.App()

ACCOUNTS = {
    "acct_1001": {
        "name": "Larkspur Analytics",
        "email": "billing@larkspur.example",
        "plan": "pro",
        "api_token": "lrk_tok_93b1f0c27e5d4a68",
    },
    "acct_1003": {
        "name": "Bluebird Bakery",
        "email": "hello@bluebird.example",
        "plan": "starter",
        "api_token": "bbk_tok_1c9e0f7a2b3d4c5e",
    },
}


class Account(BaseModel):
    account_id: str
    name: str
    email: str
    plan: str
    api_token: str  # the customer's own token: masked wherever Keel shows it


class CrmReceipt(BaseModel):
    crm_id: str
    fields: int


@app.tool()
async def fetch_account(account_id: str) -> Account:
    data = ACCOUNTS.get(account_id)
    if data is None:
        raise ValueError(f"no account {account_id!r} (known: {', '.join(sorted(ACCOUNTS))})")
    return Account(account_id=account_id, **data)


@app.tool(retry=keel.Retry(attempts=3, backoff=0.05))
async def push_to_crm(crm_key: keel.Secret, account: Account) -> CrmReceipt:
    key = crm_key.reveal()  # read now, from its source, in this worker only
    if not key.startswith("crm_"):
        raise PermissionError("the CRM refused the key: CRM keys start with crm_")
    # what the call did, never the key itself: the result is journaled
    crm_id = "crm_" + hashlib.sha256(f"{key}:{account.account_id}".encode()).hexdigest()[:10]
    return CrmReceipt(crm_id=crm_id, fields=len(account.model_dump()))


@app.workflow()
async def sync(ctx: keel.Context, account_id: str, crm_key: keel.Secret) -> dict[str, str]:
    account = await ctx.call(fetch_account, account_id)
    receipt = await ctx.call(push_to_crm, crm_key, account)
    return {"account": account_id, "crm_id": receipt.crm_id, "plan": account.plan}
