"""Plugin entry point: terraform runs the installed terraform-provider-kcloud script, which runs this.

Nothing may be printed on stdout before the go-plugin handshake line.
"""
from kcloud.tfprovider.provider import serve

if __name__ == "__main__":
    serve()
