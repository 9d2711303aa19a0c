"""ManageSieve glue: between the sans-I/O core (sealmail.proto.managesieve) and the store.

For now the one mapping from script-store errors to ManageSieve responses (`errors`); the
asyncio daemon is sealmail.server.sieved.
"""

from sealmail.managesieve.errors import script_error

__all__ = ["script_error"]
