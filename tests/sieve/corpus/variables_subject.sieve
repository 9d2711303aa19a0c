require ["fileinto", "variables"];
# Subject: [acme-users] [fwd] version 1.0 is out
if header :matches "Subject" "[*] *" {
    # ${1} will hold "acme-users", ${2} "[fwd] version 1.0 is out"
    set :lower "list" "${1}";
    fileinto "lists.${list}";
    redirect "${list}-archive@example.com";
}
