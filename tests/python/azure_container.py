"""Creates a blob container on an Azure Storage endpoint (Azurite) with
pyarrow's Azure filesystem (Azure's own C++ SDK), for tests/src/azurite.rs.

    azure_container.py <host:port> <container>   (account and key from
    AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY)
"""

import sys

from parquet_read import azurite_fs


def main():
    authority, container = sys.argv[1], sys.argv[2]
    azurite_fs(authority).create_dir(container)


if __name__ == "__main__":
    main()
